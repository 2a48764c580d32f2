"""The finetuning driver's parts that need no Caffe: schedules, stage files, data, constraints."""

import gzip
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from common import LENET_EXAMPLE as LENET
from common import ROOT_ENV, run_finetune
from google.protobuf import text_format

from cmpstore import api
from cmpstore.caffe import netproto
from cmpstore.compression.gradients import share_gradients
from cmpstore.compression.prune import pruned_count
from cmpstore.errors import UsageError
from cmpstore.finetune import data, datalayers, driver, schedule, stagefiles
from cmpstore.finetune.constraints import constrain, structure
from cmpstore.synthetic import build_model

SEED_SCHEDULE = LENET / "seed_schedule.json"


def test_seed_schedule_is_the_forks():
    seed = schedule.load_schedule(SEED_SCHEDULE)
    assert [s.name for s in seed.stages] == ["prune-conv1", "prune-conv2", "prune-fc1", "prune-fc2", "quantize"]
    assert [s.iterations for s in seed.stages] == [500, 1000, 10500, 11000, 500]
    assert seed.pruned_after(1) == {"conv1": 0.33, "conv2": 0.8}
    assert seed.quantized_after(3) == {}
    assert seed.quantized_after(4) == {"conv1": 256, "conv2": 256, "fc1": 32, "fc2": 32}
    assert seed.solver["lr_policy"] == "inv"


def test_a_layer_shared_but_never_pruned_is_still_constrained():
    both = schedule.schedule_from_json(
        {
            "layers": {"a": {"sparse_ratio": 0.5, "class_num": 4}, "b": {"class_num": 8}},
            "stages": [{"prune": ["a"], "iterations": 1}, {"quantize": ["a", "b"], "iterations": 1}],
        }
    )
    assert both.constraints_after(0) == {"a": (0.5, None)}
    assert both.constraints_after(1) == {"a": (0.5, 4), "b": (None, 8)}


def test_flags_build_the_same_schedule_as_the_json():
    settings = dict(
        schedule.parse_layer_flag(t) for t in ["conv1:0.33:256", "conv2:0.8:256", "fc1:0.9:32", "fc2:0.8:32"]
    )
    flags = schedule.layer_wise_schedule(settings, [500, 1000, 10500, 11000, 500])
    seed = schedule.load_schedule(SEED_SCHEDULE)
    assert flags.stages == seed.stages
    assert flags.layers == seed.layers


def test_fingerprint_changes_with_iterations():
    seed = schedule.load_schedule(SEED_SCHEDULE)
    assert seed.fingerprint() == schedule.load_schedule(SEED_SCHEDULE).fingerprint()
    assert seed.with_iterations([1, 2, 3, 4, 5]).fingerprint() != seed.fingerprint()


@pytest.mark.parametrize(
    "document, message",
    [
        ([], "JSON object"),
        ({"layers": {}, "stages": []}, "'layers'"),
        ({"layers": {"a": {"sparse_ratio": 1.0}}, "stages": [{"prune": ["a"], "iterations": 1}]}, "[0, 1)"),
        ({"layers": {"a": {"sparse_ratio": 0.5}}, "stages": [{"prune": ["b"], "iterations": 1}]}, "'b' has no entry"),
        ({"layers": {"a": {"sparse_ratio": 0.5}}, "stages": [{"quantize": ["a"], "iterations": 1}]}, "no class_num"),
        ({"layers": {"a": {"sparse_ratio": 0.5}}, "stages": [{"prune": ["a"], "iterations": -1}]}, "from 0 to"),
        ({"layers": {"a": {"sparse_ratio": 0.5}}, "stages": [{"prune": ["a"], "iterations": 2**31}]}, "2,147,483,647"),
        (
            {"layers": {"a": {}}, "stages": [{"prune": ["a"], "iterations": 1}], "solver": {"base_lr": "abc"}},
            "'solver' base_lr must be a number, got 'abc'",
        ),
        (
            {"layers": {"a": {}}, "stages": [{"prune": ["a"], "iterations": 1}], "solver": {"stepsize": 2**40}},
            "'solver' stepsize must fit Caffe's int32",
        ),
        (
            {"layers": {"a": {}}, "stages": [{"prune": ["a"], "iterations": 1}], "solver": {"lr_policy": 3}},
            "'solver' lr_policy must be a string",
        ),
        (
            {"layers": {"a": {"sparse_ratio": 0.5}}, "stages": [{"prune": ["a"], "iterations": 1}] * 2},
            "already pruned",
        ),
        (
            {
                "layers": {"a": {}},
                "stages": [{"prune": {"a": 0.8}, "iterations": 1}, {"prune": {"a": 0.5}, "iterations": 1}],
            },
            "'a' is already pruned to 0.8 by an earlier stage; pruning it again needs a higher ratio",
        ),
        (
            {"layers": {"a": {}}, "stages": [{"prune": {"a": 1.5}, "iterations": 1}]},
            "layer 'a': a sparse ratio must be in [0, 1), got 1.5",
        ),
        (
            {"layers": {"a": {}}, "stages": [{"prune": {"a": "x"}, "iterations": 1}]},
            "the ratio for 'a' must be a number",
        ),
        ({"layers": {"a": {}}, "stages": [{"prune": {}, "iterations": 1}]}, "or, for prune, an object of layer names"),
        ({"layers": {"a": {"class_num": 0}}, "stages": [{"prune": ["a"], "iterations": 1}]}, "1..65536"),
        ({"layers": {"a": {}}, "stages": [{"prune": ["a"], "iterations": 1}], "solver": {"net": "x"}}, "may set only"),
        ({"layers": {"a": {}}, "stages": [{"prune": ["a"], "quantize": ["a"], "iterations": 1}]}, "expected"),
    ],
)
def test_bad_schedules_are_refused_with_a_reason(document, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        schedule.schedule_from_json(document)


def test_schedule_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "s.json"
    bad.write_text("{not json")
    with pytest.raises(UsageError, match="s.json: not a JSON schedule"):
        schedule.load_schedule(bad)


def test_input_layers_replace_data_layers_per_phase():
    net = netproto.read_prototxt(LENET / "lenet_train_test.prototxt")
    fed = stagefiles.with_input_layers(net, (1, 28, 28), "lenet")
    assert fed.feeds["train"] == stagefiles.Feed("data", "label", 64, 0.00390625, 0.0)
    assert fed.feeds["test"].batch_size == 100
    assert fed.score_tops == {"train": "fc2", "test": "fc2"}
    inputs = [layer for layer in fed.net.layer if layer.type == "Input"]
    assert [list(s.dim) for s in inputs[0].input_param.shape] == [[64, 1, 28, 28], [64]]
    assert not any(layer.type == "Data" for layer in fed.net.layer)
    assert net.layer[0].type == "Data"  # the input is not modified


def test_unsupported_transform_is_refused():
    net = netproto.read_prototxt(LENET / "lenet_train_test.prototxt")
    net.layer[0].transform_param.mirror = True
    with pytest.raises(UsageError, match="layer 'mnist': transform_param mirror"):
        stagefiles.with_input_layers(net, (1, 28, 28), "lenet")


def test_cmp_layers_carry_the_stage_settings():
    net = netproto.read_prototxt(LENET / "lenet_train_test.prototxt")
    rewritten = stagefiles.with_cmp_layers(net, {"conv1": 0.33, "fc1": 0.9}, {"fc1": 32})
    layers = {layer.name: layer for layer in rewritten.layer}
    assert layers["conv1"].type == "CmpConvolution"
    assert layers["conv1"].convolution_param.sparse_ratio == pytest.approx(0.33)
    assert not layers["conv1"].convolution_param.quantize_term
    assert layers["fc1"].type == "CmpInnerProduct"
    assert layers["fc1"].inner_product_param.quantize_term
    assert layers["fc1"].inner_product_param.class_num == 32
    assert layers["conv2"].type == "Convolution"
    with pytest.raises(UsageError, match="only Convolution and InnerProduct"):
        stagefiles.with_cmp_layers(net, {"pool1": 0.5}, {})


def test_stage_solver_trains_the_stage_net_only():
    base = netproto.read_solver_prototxt(LENET / "lenet_solver.prototxt")
    base.test_iter.append(100)
    base.snapshot = 5000
    solver = stagefiles.stage_solver(base, "/w/net.prototxt", 123, {"base_lr": 0.01}, gpu=True)
    assert solver.net == "/w/net.prototxt"
    assert solver.max_iter == 123
    assert solver.base_lr == pytest.approx(0.01)
    assert not solver.test_iter and not solver.snapshot and not solver.snapshot_after_train
    assert solver.solver_mode == netproto.SolverParameter.GPU


def test_mnist5k_split_is_fixed_and_shuffled(tmp_path):
    rows = [[(i * 7 + j) % 256 for j in range(784)] + [i // 10] for i in range(5000 // 10 * 10)]
    csv = tmp_path / "mnist_5k.csv.gz"
    csv.write_bytes(gzip.compress("\n".join(",".join(map(str, r)) for r in rows).encode()))
    first = data.load_dataset(f"mnist5k:{csv}")
    again = data.load_dataset(f"mnist5k:{csv}")
    assert first.train_data.shape == (4000, 1, 28, 28) and first.test_labels.shape == (1000,)
    assert np.array_equal(first.test_labels, again.test_labels)
    assert len(set(first.test_labels.tolist())) > 100  # shuffled, not the last labels of a sorted file


def test_npz_dataset_is_checked(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, train_data=np.zeros((4, 1, 2, 2)), train_labels=np.zeros(4), test_data=np.zeros((2, 1, 2, 2)))
    with pytest.raises(UsageError, match="missing arrays: test_labels"):
        data.load_dataset(str(path))


def test_batches_cover_every_sample_each_epoch():
    stream = data.BatchStream(np.arange(10).reshape(10, 1, 1, 1), np.arange(10), 4, seed=1)
    seen = np.concatenate([stream.next()[1] for _ in range(5)])  # 20 = two epochs
    assert sorted(seen[:10].tolist()) == list(range(10))
    assert sorted(seen[10:].tolist()) == list(range(10))


def test_shared_gradients_keep_structure_through_sgd_with_momentum_and_decay():
    """Caffe's SGD update in float32: pruned weights stay 0, each cluster stays one value."""
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((50, 40)).astype(np.float32)
    limit = constrain("fc", weights, 0.8, 8)
    assert structure("fc", weights).zeros == 1600
    history = np.zeros_like(weights)
    for _ in range(200):
        diff = rng.standard_normal(weights.shape).astype(np.float32)
        limit.share(diff)
        diff += np.float32(0.0005) * weights  # Regularize
        history = np.float32(0.9) * history + np.float32(0.01) * diff  # ComputeUpdateValue
        weights -= history  # Update
    found = structure("fc", weights)
    assert found.zeros == 1600
    assert found.distinct_nonzero <= 8


def test_dry_run_writes_every_stage_without_caffe(tmp_path):
    csv = tmp_path / "digits.csv.gz"
    csv.write_bytes(gzip.compress("\n".join(",".join(["0"] * 784 + [str(i % 10)]) for i in range(5000)).encode()))
    work = tmp_path / "work"
    done = run_finetune(
        "--schedule", SEED_SCHEDULE, "--data", f"mnist5k:{csv}", "--backend", "cmp", "--dry-run", "--work-dir", work
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stages = sorted(p.name for p in work.iterdir())
    assert stages == ["01-prune-conv1", "02-prune-conv2", "03-prune-fc1", "04-prune-fc2", "05-quantize"]
    quantize = netproto.read_prototxt(work / "05-quantize" / "net.prototxt")
    assert sum(layer.type.startswith("Cmp") for layer in quantize.layer) == 4
    assert netproto.read_solver_prototxt(work / "03-prune-fc1" / "solver.prototxt").max_iter == 10500


@pytest.mark.parametrize("problem", ["data", "layer"])
def test_driver_errors_are_one_line_with_exit_status_2(tmp_path, problem):
    dataset = tmp_path / "d.npz"
    if problem == "layer":
        images, labels = np.zeros((4, 1, 28, 28)), np.zeros(4)
        np.savez(dataset, train_data=images, train_labels=labels, test_data=images, test_labels=labels)
    done = run_finetune(
        "--layer", "conv9:0.5:4", "--iterations", "1,1", "--data", dataset, "--work-dir", tmp_path / "w"
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    expected = "d.npz: no such file" if problem == "data" else "names layer 'conv9', which this net does not have"
    assert expected in done.stderr


def test_cmp_backend_says_clearly_when_caffe_lacks_the_cmp_layers(tmp_path):
    """A stock Caffe (here a stand-in module registering stock layers only) is refused before any work."""
    fake = tmp_path / "fake" / "caffe"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("def layer_type_list():\n    return ['Convolution', 'InnerProduct']\n")
    weights = tmp_path / "lenet.caffemodel"
    api.save_model(build_model(), weights)
    dataset = tmp_path / "d.npz"
    images, labels = np.zeros((4, 1, 28, 28)), np.zeros(4)
    np.savez(dataset, train_data=images, train_labels=labels, test_data=images, test_labels=labels)
    env = dict(ROOT_ENV, PYTHONPATH=f"{tmp_path / 'fake'}{os.pathsep}{ROOT_ENV['PYTHONPATH']}")
    done = run_finetune(
        "--layer", "conv1:0.5:4", "--iterations", "1,1", "--data", dataset, "--backend", "cmp",
        "--work-dir", tmp_path / "w", env=env, weights=weights,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "does not register CmpConvolution, CmpInnerProduct" in done.stderr
    assert "tools/install_pycaffe.sh builds in" in done.stderr and "Traceback" not in done.stderr


ITERATIVE = {
    "layers": {"fc1": {"sparse_ratio": 0.9, "class_num": 16}, "fc2": {"sparse_ratio": 0.5, "class_num": 16}},
    "stages": [
        {"prune": {"fc1": 0.6}, "iterations": 10},
        {"prune": {"fc1": 0.8, "fc2": 0.5}, "iterations": 20},
        {"prune": ["fc1"], "iterations": 30},
        {"quantize": ["fc1", "fc2"], "iterations": 40},
    ],
}


def test_iterative_pruning_raises_a_layers_ratio_stage_by_stage():
    plan = schedule.schedule_from_json(ITERATIVE)
    assert [plan.pruned_after(index).get("fc1") for index in range(4)] == [0.6, 0.8, 0.9, 0.9]
    assert plan.pruned_after(1)["fc2"] == 0.5
    assert [stage.name for stage in plan.stages] == ["prune-fc1-0.6", "prune-fc1-0.8+fc2-0.5", "prune-fc1", "quantize"]
    assert schedule.schedule_from_json(plan.to_json()) == plan
    assert plan.with_iterations([1, 2, 3, 4]).pruned_after(1) == plan.pruned_after(1)


def test_iterative_pruning_keeps_what_was_pruned_before():
    rng = np.random.default_rng(4)
    weights = rng.standard_normal((50, 40)).astype(np.float32)
    first = constrain("fc1", weights, 0.6, None)
    pruned_first = ~first.mask
    weights += rng.standard_normal(weights.shape).astype(np.float32) * 0.05 * first.mask  # finetuning moves survivors
    second = constrain("fc1", weights, 0.8, None)
    assert np.all(~second.mask[pruned_first])
    assert np.count_nonzero(second.mask) == weights.size - pruned_count(weights.size, 0.8)


def test_shipped_iterative_schedule_dry_runs_with_both_backends(tmp_path):
    csv = tmp_path / "digits.csv.gz"
    csv.write_bytes(gzip.compress("\n".join(",".join(["0"] * 784 + [str(i % 10)]) for i in range(5000)).encode()))
    for backend in ("stock", "cmp"):
        work = tmp_path / backend
        done = run_finetune(
            "--schedule", LENET / "iterative_schedule.json", "--data", f"mnist5k:{csv}", "--backend", backend,
            "--dry-run", "--work-dir", work,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    last = netproto.read_prototxt(work / "07-quantize" / "net.prototxt")
    fc1 = next(layer for layer in last.layer if layer.name == "fc1")
    assert fc1.type == "CmpInnerProduct"
    assert fc1.inner_product_param.sparse_ratio == pytest.approx(0.96)
    assert fc1.inner_product_param.class_num == 16 and fc1.inner_product_param.quantize_term
    middle = netproto.read_prototxt(work / "05-prune-fc1-0.94" / "net.prototxt")
    assert next(
        layer for layer in middle.layer if layer.name == "fc1"
    ).inner_product_param.sparse_ratio == pytest.approx(0.94)


def test_tools_deep_compress_still_runs_the_finetune_command(tmp_path):
    csv = tmp_path / "digits.csv.gz"
    csv.write_bytes(gzip.compress("\n".join(",".join(["0"] * 784 + [str(i % 10)]) for i in range(5000)).encode()))
    shim = LENET.parent.parent / "deep_compress.py"
    done = subprocess.run(
        [sys.executable, str(shim), "--net", str(LENET / "lenet_train_test.prototxt"),
         "--solver", str(LENET / "lenet_solver.prototxt"), "--weights", "absent.caffemodel",
         "--schedule", str(SEED_SCHEDULE), "--data", f"mnist5k:{csv}", "--dry-run", "--work-dir", str(tmp_path / "w")],
        capture_output=True, text=True, env=ROOT_ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "w" / "05-quantize" / "net.prototxt").exists()


@pytest.mark.parametrize(
    "hostile_name", ["x/../../../ESCAPED", "../ESCAPED", "/tmp/ESCAPED-abs", "c" * 300, "..", "a b:c*?|<>"]
)
def test_stage_folders_stay_inside_the_work_directory(tmp_path, hostile_name):
    """A layer name is the user's string, never a path: stage files land in the work directory and nowhere else."""
    net_text = (LENET / "lenet_train_test.prototxt").read_text().replace('name: "conv1"', f'name: "{hostile_name}"')
    net = tmp_path / "net.prototxt"
    net.write_text(net_text)
    plan = tmp_path / "schedule.json"
    plan.write_text(
        '{"layers": {%s: {"sparse_ratio": 0.5, "class_num": 4}}, '
        '"stages": [{"prune": [%s], "iterations": 1}, {"quantize": [%s], "iterations": 1}]}'
        % ((f'"{hostile_name}"',) * 3)
    )
    dataset = tmp_path / "d.npz"
    images, labels = np.zeros((4, 1, 28, 28)), np.zeros(4)
    np.savez(dataset, train_data=images, train_labels=labels, test_data=images, test_labels=labels)
    cwd = tmp_path / "run" / "deeper" / "still"
    cwd.mkdir(parents=True)
    before = {path for path in tmp_path.rglob("*")} | set(pathlib.Path("/tmp").glob("ESCAPED*"))
    done = subprocess.run(
        [sys.executable, "-m", "cmpstore", "finetune", "--net", net, "--solver", LENET / "lenet_solver.prototxt",
         "--weights", "absent.caffemodel", "--schedule", plan, "--data", dataset, "--dry-run", "--work-dir", "a/wd"],
        cwd=cwd, env=ROOT_ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    work = cwd / "a" / "wd"
    after = {path for path in tmp_path.rglob("*")} | set(pathlib.Path("/tmp").glob("ESCAPED*"))
    written = after - before
    assert written and all(path == work.parent or work in path.parents or path == work for path in written), written
    folders = sorted(path.name for path in work.iterdir())
    assert len(folders) == 2 and all(len(name) < 100 and "/" not in name for name in folders)
    assert folders[1] == "02-quantize" and folders[0].startswith("01-prune-")
    stage_net = netproto.read_prototxt(work / folders[0] / "net.prototxt")
    assert hostile_name in [layer.name for layer in stage_net.layer]  # the net itself keeps the user's name


def test_stage_folder_names_are_distinct_when_made_safe():
    assert driver.stage_folder(0, "prune-conv1") == "01-prune-conv1"
    assert driver.stage_folder(4, "prune-fc1-0.8+fc2-0.5") == "05-prune-fc1-0.8+fc2-0.5"
    assert driver.stage_folder(0, "prune-a/b") != driver.stage_folder(0, "prune-a_b")
    assert driver.stage_folder(0, "prune-" + "x" * 300) != driver.stage_folder(0, "prune-" + "x" * 299)


def test_a_work_directory_link_out_of_it_is_refused(tmp_path):
    """A stage file that is a symbolic link to a file elsewhere is not written through."""
    outside = tmp_path / "outside.prototxt"
    outside.write_text("precious\n")
    dataset = tmp_path / "d.npz"
    images, labels = np.zeros((4, 1, 28, 28)), np.zeros(4)
    np.savez(dataset, train_data=images, train_labels=labels, test_data=images, test_labels=labels)
    work = tmp_path / "w"
    (work / "01-prune-conv1").mkdir(parents=True)
    (work / "01-prune-conv1" / "net.prototxt").symlink_to(outside)
    done = run_finetune(
        "--layer", "conv1:0.5:4", "--iterations", "1,1", "--data", dataset, "--dry-run", "--work-dir", work
    )  # fmt: skip
    assert done.returncode == 2 and "resolves outside the work directory" in done.stderr, done.stderr
    assert outside.read_text() == "precious\n"


@pytest.mark.parametrize("clusters", [None, 1, 16])
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.95, 0.999])
def test_constraint_share_gives_exactly_the_reference_gradient(ratio, clusters):
    """The per-iteration fast path against :func:`share_gradients`, bit for bit."""
    rng = np.random.default_rng(7)
    weights = rng.standard_normal((30, 7, 3, 3)).astype(np.float32)
    limit = constrain("conv", weights, ratio, clusters)
    for _ in range(3):
        diff = rng.standard_normal(weights.shape).astype(np.float32)
        expected = share_gradients(diff, limit.mask, limit.labels, reduce="mean")
        limit.share(diff)
        assert diff.tobytes() == expected.tobytes()


def test_an_input_layer_net_without_data_is_refused(tmp_path):
    lenet = (LENET / "lenet_train_test.prototxt").read_text()
    net = tmp_path / "net.prototxt"
    net.write_text(
        'layer { name: "data" type: "Input" top: "data" top: "label" '
        "input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } shape { dim: 1 } } }\n"
        + lenet[lenet.index('layer {\n  name: "conv1"') :]
    )
    done = subprocess.run(
        [sys.executable, "-m", "cmpstore", "finetune", "--net", net, "--solver", LENET / "lenet_solver.prototxt",
         "--weights", "absent.caffemodel", "--layer", "fc1:0.9:16", "--iterations", "1,1", "--dry-run",
         "--work-dir", tmp_path / "w"],
        env=ROOT_ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "layer 'data': a layer of type Input reads no data of its own: give the data with --data" in done.stderr


def test_numpy_data_with_iter_size_is_refused(tmp_path):
    solver = tmp_path / "solver.prototxt"
    solver.write_text((LENET / "lenet_solver.prototxt").read_text() + "iter_size: 2\n")
    csv = tmp_path / "digits.csv.gz"
    csv.write_bytes(gzip.compress("\n".join(",".join(["0"] * 784 + [str(i % 10)]) for i in range(5000)).encode()))
    done = subprocess.run(
        [sys.executable, "-m", "cmpstore", "finetune", "--net", LENET / "lenet_train_test.prototxt",
         "--solver", solver, "--weights", "absent.caffemodel", "--layer", "fc1:0.9:16", "--iterations", "1,1",
         "--data", f"mnist5k:{csv}", "--dry-run", "--work-dir", tmp_path / "w"],
        env=ROOT_ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2
    assert "iter_size 2 accumulates several batches per update" in done.stderr


def test_a_data_layers_batch_size_comes_from_its_own_parameter():
    """HDF5Data's batch_size, never ImageData's default of 1."""
    text = (
        'layer { name: "h5" type: "HDF5Data" top: "data" top: "label" hdf5_data_param { source: "x" batch_size: 64 } }'
    )
    net = text_format.Parse(text, netproto.NetParameter())
    assert datalayers.batch_size(net.layer[0], "net.prototxt") == 64


@pytest.mark.parametrize("which", ["schedule", "net", "solver", "data"])
def test_the_output_never_replaces_an_input_even_with_force(tmp_path, which):
    dataset = tmp_path / "d.npz"
    images, labels = np.zeros((4, 1, 28, 28)), np.zeros(4)
    np.savez(dataset, train_data=images, train_labels=labels, test_data=images, test_labels=labels)
    plan = tmp_path / "schedule.json"
    plan.write_text(SEED_SCHEDULE.read_text())
    net, solver = tmp_path / "net.prototxt", tmp_path / "solver.prototxt"
    net.write_text((LENET / "lenet_train_test.prototxt").read_text())
    solver.write_text((LENET / "lenet_solver.prototxt").read_text())
    weights = tmp_path / "w.caffemodel"
    api.save_model(build_model(), weights)
    target = {"schedule": plan, "net": net, "solver": solver, "data": dataset}[which]
    before = target.read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "cmpstore", "finetune", "--net", net, "--solver", solver, "--weights", weights,
         "--schedule", plan, "--data", dataset, "--work-dir", tmp_path / "w", "-o", target, "--force"],
        env=ROOT_ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2 and "refusing to overwrite an input of this command" in done.stderr, done.stderr
    assert target.read_bytes() == before


def test_an_input_where_the_driver_writes_is_refused(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    net = work / "eval.prototxt"
    net.write_text((LENET / "lenet_train_test.prototxt").read_text())
    done = subprocess.run(
        [sys.executable, "-m", "cmpstore", "finetune", "--net", net, "--solver", LENET / "lenet_solver.prototxt",
         "--weights", "absent.caffemodel", "--layer", "fc1:0.9:16", "--iterations", "1,1", "--data", "mnist5k",
         "--dry-run", "--work-dir", work],
        env=ROOT_ENV, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2
    assert "eval.prototxt: is an input of this run, and lies where the driver writes its own files" in done.stderr
    assert net.read_text() == (LENET / "lenet_train_test.prototxt").read_text()


def test_a_schedule_nested_too_deeply_is_one_error(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"layers": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(UsageError, match="deep.json: not a schedule: its JSON is nested too deeply"):
        schedule.load_schedule(deep)


@pytest.mark.parametrize("counts", [[-5, -5], [2**31, 1]])
def test_iteration_flags_are_bounded_as_the_json(counts):
    with pytest.raises(UsageError, match="iterations must be a whole number from 0 to 2,147,483,647"):
        schedule.layer_wise_schedule({"fc1": schedule.LayerSetting(0.5, 4)}, counts)


@pytest.mark.parametrize(
    "replace, message",
    [
        ({"train_data": np.array([["a"]])}, "train_data holds <U1 values; numbers are needed"),
        ({"train_labels": np.zeros(4, dtype=[("x", "i4")])}, "train_labels holds"),
        ({"test_labels": np.full(4, 0.5)}, "test_labels holds labels that are not whole numbers"),
        ({"test_data": np.full((4, 1, 28, 28), np.nan)}, "test_data holds values that are not finite"),
    ],
)
def test_npz_arrays_of_the_wrong_kind_are_refused(tmp_path, replace, message):
    images, labels = np.zeros((4, 1, 28, 28)), np.zeros(4)
    arrays = {"train_data": images, "train_labels": labels, "test_data": images, "test_labels": labels, **replace}
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(UsageError, match=re.escape(message)):
        data.load_dataset(str(tmp_path / "d.npz"))


@pytest.mark.parametrize(
    "log",
    [
        "cmpstore-preflight: TRAIN build\ncmpstore-preflight: TRAIN forward\n"
        "F20261203 21:15:20.990212 13624 data_transformer.cpp:15] Check failed: a == b (1 vs. 3)\n",
        # a prefetch thread's fatal line written into the middle of the main thread's
        "cmpstore-preflight: TRAIN forwardF1203 21:15:20.990212 13624 data_transformer.cpp:15] Check failed: "
        "a == b (1 vs. 3)\n*** Check failure stack trace: ***\n",
        "cmpstore-preflight: TRAIN forward\nnoise Check failed: a == b (1 vs. 3)\n",
    ],
)
def test_a_caffe_abort_becomes_one_line_with_the_phase_step_and_data_layer(log):
    from cmpstore.finetune.preflight import caffe_failure

    assert caffe_failure(log, 134, {"train": ["mnist"]}) == (
        "Caffe refused the net (TRAIN phase, reading a batch; layer 'mnist'): Check failed: a == b (1 vs. 3)"
    )

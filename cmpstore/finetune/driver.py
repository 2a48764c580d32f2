"""Run a Deep Compression schedule with pycaffe: prune layer by layer, then weight-share, finetuning after each step.

Each stage is one finetuning run that starts from the previous stage's
weights.  A stage's files live in its own folder of the work directory
(``01-prune-conv1/net.prototxt``, ``solver.prototxt``, ``weights.caffemodel``
and the latest snapshot) and ``state.json`` records each finished stage, so
an interrupted run resumes: after the last finished stage, and within the
stage it was in from that stage's last snapshot.  Two backends share
everything but the layers:

* ``stock``: any Caffe.  Stock layers; the masks and clusters come from
  :mod:`cmpstore.finetune.constraints`, and a solver callback masks and shares
  the weight diffs between backward and update.
* ``cmp``: a Caffe with CmpConvolution/CmpInnerProduct layers: cmpstore's own
  (``tools/install_pycaffe.sh`` builds them in) or the DeepCompression-caffe
  fork's.  The stage nets use them, and they prune, cluster and share
  gradients themselves (on the GPU in GPU mode), computing their masks and
  clusters when the stage loads the previous stage's weights.

The data are the net's own data layers, read by Caffe as ``caffe train``
reads them (:mod:`cmpstore.finetune.datalayers`), or numpy arrays
(``--data``) fed into Input layers.  Every net is evaluated as the stock net
on the TEST phase: the saved weights already hold the pruned and shared
values, so what is measured is exactly what is encoded.

Caffe aborts the whole process on a failed CHECK, so everything that can be
checked in Python (files, layer names, the schedule, the data sources) is
checked before Caffe is touched, and the first stage's nets are built once in
a child process (:mod:`cmpstore.finetune.preflight`) before training starts.
"""

from __future__ import annotations

import gc
import glob
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import api
from ..atomic import Placement, check_output, write_chunks
from ..caffe import netproto
from ..errors import UsageError, option
from ..report import format_table
from .constraints import LayerConstraint, constrain, structure
from .data import BatchStream, Dataset
from .datalayers import check_net_reads_its_data
from .preflight import check_in_caffe
from .schedule import Schedule
from .stagefiles import (
    STOCK_TO_CMP,
    FedNet,
    Score,
    accuracy_scores,
    stage_solver,
    with_cmp_layers,
    with_input_layers,
    with_own_data_layers,
)

BACKENDS = ("stock", "cmp")
STATE_FILE = "state.json"
CMP_TYPES = tuple(STOCK_TO_CMP.values())
#: Iterations between snapshots when neither the driver's option nor the solver's ``snapshot`` says.
DEFAULT_SNAPSHOT_EVERY = 1000
#: At most this many iterations per ``solver.step``: Python (a Ctrl-C, SIGTERM) runs only between steps.
STEP_CHUNK = 50
_SNAPSHOT = re.compile(r"_iter_(\d+)\.solverstate$")


@dataclass
class Job:
    """Everything one run needs; see ``cmpstore finetune --help`` for the options."""

    net: str  # train/val prototxt
    solver: str  # solver prototxt
    weights: str  # pretrained .caffemodel
    schedule: Schedule
    dataset: Dataset | None  # numpy data; None: the net's own data layers
    work_dir: str
    output: str  # the encoded .cmps file
    backend: str = "stock"
    gpu: bool = False
    dry_run: bool = False
    seed: int = 0
    force: bool = False  # replace an existing output
    snapshot_every: int | None = None  # iterations; default the solver's snapshot, else DEFAULT_SNAPSHOT_EVERY
    verbose: bool = False  # Caffe's own log lines on stderr
    bar: bool = False  # a progress bar over the whole schedule
    data_spec: str = ""  # what --data said, for the state's identity
    inputs: tuple[str, ...] = ()  # other files read (a schedule, an .npz): never overwritten
    log: Callable[[str], None] = print


@dataclass
class StageRecord:
    name: str
    weights: str
    accuracy: float  # the first top-1 Accuracy of the TEST phase (or the numpy held-out top-1)
    seconds: float
    layers: dict[str, dict] = field(default_factory=dict)  # name -> sparsity, distinct_nonzero
    scores: dict[str, float] = field(default_factory=dict)  # every Accuracy of the TEST phase, by label


@dataclass
class _Run:
    """What every stage of one run shares."""

    job: Job
    fed: FedNet
    base_solver: object  # netproto.SolverParameter
    scores: list[Score]
    test_iter: int
    bar: object = None


def run(job: Job) -> list[StageRecord]:
    """Run (or resume) every stage, then encode the result and log its report."""
    shared = prepare(job)
    fed, base_solver = shared.fed, shared.base_solver
    stage_dirs = [_write_stage_files(job, fed, base_solver, index) for index in range(len(job.schedule.stages))]
    return _dry_run_or_train(job, shared, stage_dirs)


def prepare(job: Job) -> _Run:
    """Read and check the net, the solver and the data before anything runs; what every stage shares."""
    if job.backend not in BACKENDS:
        raise UsageError(f"{option('backend')} must be one of {', '.join(BACKENDS)}, got {job.backend!r}")
    base_solver = netproto.read_solver_prototxt(job.solver)
    _check_inputs_outside_driver_files(job)
    os.makedirs(job.work_dir, exist_ok=True)
    base_net = _train_val_net(job)
    _check_layers(base_net, job)
    if job.dataset is not None:
        if base_solver.iter_size > 1:
            raise UsageError(
                f"iter_size {base_solver.iter_size} accumulates several batches per update, which the numpy "
                f"feed ({option('data')}) cannot give; run without {option('data')} on the net's own data layers, or "
                "use iter_size 1",
                path=job.solver,
            )
        fed = with_input_layers(base_net, job.dataset.train_data.shape[1:], job.net)
        if job.dataset.description:
            job.log(f"data: {job.dataset.description}")
        scores, test_iter = [Score(fed.score_tops["test"], 1, "held-out top-1")], 0
    else:
        check_net_reads_its_data(base_net, job.net)
        fed = with_own_data_layers(base_net)
        scores = accuracy_scores(base_net)
        if not scores:
            raise UsageError("the TEST phase has no Accuracy layer to evaluate the stages with", path=job.net)
        if not base_solver.test_iter or base_solver.test_iter[0] <= 0:
            raise UsageError(
                "has no test_iter: say how many TEST batches an evaluation runs (as caffe train needs)",
                path=job.solver,
            )
        test_iter = base_solver.test_iter[0]
    return _Run(job, fed, base_solver, scores, test_iter)


def _dry_run_or_train(job: Job, shared: _Run, stage_dirs: list[str]) -> list[StageRecord]:
    fed = shared.fed
    if job.dry_run:
        for stage_dir in stage_dirs:
            job.log(f"wrote {os.path.join(stage_dir, 'net.prototxt')} and solver.prototxt")
        return []
    _check_weights(job)
    state = _State.load(job)  # another run in this work directory is the first thing to say
    # Before hours of training, not after; no input may become the output, --force or not.
    check_output(job.output, Placement.of(job.force, _inputs(job)))
    caffe = _import_caffe(job)
    eval_net = _write_eval_net(job, fed)
    scores = shared.scores
    if any(state.finished(stage_dir) is None for stage_dir in stage_dirs):
        check_in_caffe(os.path.join(stage_dirs[0], "net.prototxt"), job.weights, job.gpu, _caffe_env(job), job.net)
    if state.pretrained_accuracy is None:
        pretrained = _evaluate(caffe, shared, eval_net, job.weights)
        state.pretrained_accuracy, state.pretrained_scores = _primary(pretrained, scores), pretrained
        state.save()
    job.log(f"pretrained: {_describe_scores(state.pretrained_scores, state.pretrained_accuracy)}")
    remaining = sum(
        stage.iterations
        for stage, stage_dir in zip(job.schedule.stages, stage_dirs, strict=True)
        if state.finished(stage_dir) is None
    )
    shared.bar = _progress_bar(job, remaining)
    weights = job.weights
    try:
        for index, (stage, stage_dir) in enumerate(zip(job.schedule.stages, stage_dirs, strict=True)):
            label = f"stage {index + 1}/{len(job.schedule.stages)} {stage.name}"
            record = state.finished(stage_dir)
            if record is None:
                record = _run_stage(caffe, shared, index, stage_dir, weights, eval_net, label)
                state.add(stage_dir, record)
            else:
                label += " (done before, resumed after it)"
            _log(
                shared,
                f"{label}: {stage.iterations} iterations in {record.seconds:.1f} s, "
                f"{_describe_scores(record.scores, record.accuracy)}; " + _describe(record.layers),
            )
            weights = record.weights
    finally:
        if shared.bar is not None:
            shared.bar.close()
    api.encode(weights, job.output, force=job.force)
    job.log(f"encoded {weights} into {job.output}: {os.path.getsize(job.output):,} bytes")
    job.log(format_table(api.report(job.output)))
    return [state.finished(d) for d in stage_dirs]


def _run_stage(
    caffe, shared: _Run, index: int, stage_dir: str, start_weights: str, eval_net: str, label: str
) -> StageRecord:
    began = time.perf_counter()
    weights, layers = _train_stage(caffe, shared, index, stage_dir, start_weights, label)
    # A data layer's reader thread serves one net per source: the evaluation's net must not meet
    # the stage's solver, which its callbacks keep alive in a reference cycle until collected.
    gc.collect()
    seconds = time.perf_counter() - began
    scores = _evaluate(caffe, shared, eval_net, weights)
    _remove_snapshots(stage_dir)
    return StageRecord(os.path.basename(stage_dir), weights, _primary(scores, shared.scores), seconds, layers, scores)


def _train_stage(
    caffe, shared: _Run, index: int, stage_dir: str, start_weights: str, label: str
) -> tuple[str, dict[str, dict]]:
    """Train one stage (from its last snapshot, if it has one); return its weights file and its layers' structure."""
    job = shared.job
    schedule, stage = job.schedule, job.schedule.stages[index]
    solver = caffe.get_solver(os.path.join(stage_dir, "solver.prototxt"))
    snapshot = _latest_snapshot(stage_dir, stage.iterations)
    if snapshot is None:
        solver.net.copy_from(start_weights)
    else:
        solver.restore(snapshot)
        _log(shared, f"{label}: resuming from its snapshot at iteration {solver.iter} ({snapshot})")
    constraints: list[LayerConstraint] = []
    if job.backend == "stock":
        # On a snapshot's weights, already pruned and shared, this finds the same masks and clusters again.
        for name, (ratio, clusters) in schedule.constraints_after(index).items():
            constraints.append(constrain(name, solver.net.params[name][0].data, ratio, clusters))
    # The solver keeps its callbacks in C++, where Python's collector cannot see them: a callback that
    # held the solver or its net would keep both alive after the stage, and with them the data layers'
    # reader threads, on which the next net over the same source would wait forever.  The callbacks
    # reach the net through ``live``, which is emptied when the stage ends.
    live = {"net": solver.net}
    on_start = _numpy_feed(shared, live, solver.iter, index) if not shared.fed.own_data else (lambda: None)

    def on_gradients_ready():
        params = live["net"].params
        for constraint in constraints:
            constraint.share(params[constraint.name][0].diff)

    if constraints or not shared.fed.own_data:
        solver.add_callback(on_start, on_gradients_ready)
    try:
        _train(shared, solver, stage_dir, stage.iterations, label)
        weights = os.path.abspath(_inside_work_dir(job, os.path.basename(stage_dir), "weights.caffemodel"))
        partial = weights + ".partial"
        solver.net.save(partial)
        os.replace(partial, weights)
        layers = {}
        for name in schedule.layers:
            found = structure(name, solver.net.params[name][0].data)
            layers[name] = {"sparsity": found.sparsity, "distinct_nonzero": found.distinct_nonzero}
    finally:
        live.clear()
    return weights, layers


def _train(shared: _Run, solver, stage_dir: str, iterations: int, label: str) -> None:
    """Step the solver to ``iterations`` in chunks: testing, snapshotting and reporting in between.

    Whatever stops the run between two chunks (Ctrl-C, SIGTERM, an error)
    snapshots first, so that the stage resumes from here.
    """
    job, base = shared.job, shared.base_solver
    test_every = base.test_interval if shared.fed.own_data else 0
    snapshot_every = job.snapshot_every or base.snapshot or DEFAULT_SNAPSHOT_EVERY
    report_every = base.display or 100
    loss_tops = [top for top in solver.net.outputs if "loss" in top.lower()] or list(solver.net.outputs)[:1]
    snapshotted = solver.iter
    try:
        while solver.iter < iterations:
            now = solver.iter
            boundaries = [iterations, _next_multiple(now, snapshot_every), _next_multiple(now, report_every)]
            if test_every:
                boundaries.append(_next_multiple(now, test_every))
            step = min(min(boundaries) - now, STEP_CHUNK)
            solver.step(step)
            now = solver.iter
            loss = float(np.asarray(solver.net.blobs[loss_tops[0]].data).sum()) if loss_tops else float("nan")
            if shared.bar is not None:
                shared.bar.set_postfix_str(f"{label} iter {now}/{iterations} loss {loss:.4g}", refresh=False)
                shared.bar.update(step)
            elif now % report_every == 0 or now == iterations:
                _log(shared, f"{label}: iteration {now}/{iterations}, loss {loss:.4g}")
            if test_every and now % test_every == 0 and now < iterations:
                scores = _test_in_solver(solver, shared)
                _log(shared, f"{label}: iteration {now}, {_describe_scores(scores, _primary(scores, shared.scores))}")
            if now % snapshot_every == 0 and now < iterations:
                _snapshot(solver, stage_dir)
                snapshotted = now
    except BaseException:
        stopped = solver.iter
        if snapshotted < stopped < iterations:
            _snapshot(solver, stage_dir)
            snapshotted = stopped
        if _latest_snapshot(stage_dir, iterations) is not None:
            _log(
                shared,
                f"{label}: stopped at iteration {stopped}; snapshot kept, a rerun resumes here "
                f"(from iteration {snapshotted})",
            )
        raise


def _next_multiple(now: int, every: int) -> int:
    return (now // every + 1) * every


def _snapshot(solver, stage_dir: str) -> None:
    """Caffe's snapshot of weights and solver state; only the newest is kept."""
    solver.snapshot()
    latest = _latest_snapshot(stage_dir, None)
    for path in glob.glob(os.path.join(glob.escape(stage_dir), "snapshot_iter_*")):
        if latest is None or not path.startswith(latest[: -len(".solverstate")] + "."):
            os.remove(path)


def _latest_snapshot(stage_dir: str, iterations: int | None) -> str | None:
    """The newest complete snapshot (solver state and the weights it names) of a stage, if any."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(stage_dir), "snapshot_iter_*.solverstate")):
        match = _SNAPSHOT.search(path)
        weights = path[: -len(".solverstate")] + ".caffemodel"
        if match and os.path.exists(weights) and (iterations is None or int(match.group(1)) <= iterations):
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def _remove_snapshots(stage_dir: str) -> None:
    for path in glob.glob(os.path.join(glob.escape(stage_dir), "snapshot_iter_*")):
        os.remove(path)


def _numpy_feed(shared: _Run, live: dict, start: int, index: int) -> Callable[[], None]:
    """The callback that fills the train net (``live["net"]``) Input layers with the next numpy batch."""
    job, feed = shared.job, shared.fed.feeds["train"]
    batches = BatchStream(job.dataset.train_data, job.dataset.train_labels, feed.batch_size, job.seed + index)
    batches.skip(start)  # a resumed stage continues the same sequence of batches

    def on_start():
        images, labels = batches.next()
        blobs = live["net"].blobs
        blobs[feed.data_top].data[...] = (images - feed.mean) * feed.scale
        blobs[feed.label_top].data[...] = labels

    return on_start


def _test_in_solver(solver, shared: _Run) -> dict[str, float]:
    """The TEST phase on the solver's test net, with the weights being trained (as Caffe's Solver::Test)."""
    net = solver.test_nets[0]
    net.share_with(solver.net)
    return _average_scores(net, shared.scores, shared.test_iter)


def _average_scores(net, scores: list[Score], batches: int) -> dict[str, float]:
    """Each Accuracy output averaged over ``batches`` forward passes: what ``caffe test`` prints."""
    totals = {score.label: 0.0 for score in scores}
    for _ in range(batches):
        net.forward()
        for score in scores:
            totals[score.label] += float(np.asarray(net.blobs[score.top].data).reshape(-1)[0])
    return {label: total / batches for label, total in totals.items()}


def _primary(scores: dict[str, float], kinds: list[Score]) -> float:
    """The headline figure: the first top-1 Accuracy, else the first one."""
    for score in kinds:
        if score.top_k == 1 and score.label in scores:
            return scores[score.label]
    return next(iter(scores.values()))


def _describe_scores(scores: dict[str, float], accuracy: float) -> str:
    if not scores:
        return f"held-out top-1 {accuracy:.2%}"
    return ", ".join(f"{label} {value:.2%}" for label, value in scores.items())


def _evaluate(caffe, shared: _Run, net_path: str, weights: str) -> dict[str, float]:
    """The stock net's scores for ``weights`` on the TEST phase, as ``caffe test`` gives them.

    With the net's own data: every Accuracy layer, averaged over the
    solver's ``test_iter`` batches from the start of the test source.  With
    numpy data: top-1 on all of the held-out data.
    """
    net = caffe.Net(net_path, weights, caffe.TEST)
    try:
        if shared.fed.own_data:
            return _average_scores(net, shared.scores, shared.test_iter)
        return {shared.scores[0].label: _numpy_top1(net, shared.fed, shared.job.dataset)}
    finally:
        del net
        gc.collect()


def _numpy_top1(net, fed: FedNet, dataset: Dataset) -> float:
    """Top-1 on the held-out numpy data, in batches of the test phase's batch size."""
    feed, score_top = fed.feeds["test"], fed.score_tops["test"]
    correct = 0
    for start in range(0, dataset.test_labels.size, feed.batch_size):
        images = dataset.test_data[start : start + feed.batch_size]
        labels = dataset.test_labels[start : start + feed.batch_size]
        net.blobs[feed.data_top].reshape(*images.shape)
        net.blobs[feed.label_top].reshape(labels.size)
        net.blobs[feed.data_top].data[...] = (images - feed.mean) * feed.scale
        net.blobs[feed.label_top].data[...] = labels
        net.forward()
        scores = net.blobs[score_top].data.reshape(labels.size, -1)
        correct += int(np.count_nonzero(scores.argmax(axis=1) == labels))
    return correct / dataset.test_labels.size


def _write_stage_files(job: Job, fed: FedNet, base_solver, index: int) -> str:
    schedule, stage = job.schedule, job.schedule.stages[index]
    folder = stage_folder(index, stage.name)
    stage_dir = _inside_work_dir(job, folder)
    os.makedirs(stage_dir, exist_ok=True)
    net = fed.net
    if job.backend == "cmp":
        net = with_cmp_layers(net, schedule.pruned_after(index), schedule.quantized_after(index))
    net_path = os.path.abspath(_inside_work_dir(job, folder, "net.prototxt"))
    snapshot_prefix = os.path.abspath(_inside_work_dir(job, folder, "snapshot"))
    solver = stage_solver(
        base_solver,
        net_path,
        stage.iterations,
        schedule.solver,
        job.gpu,
        own_data=fed.own_data,
        snapshot_prefix=snapshot_prefix,
    )
    _write_text(net_path, netproto.to_text(net))
    _write_text(_inside_work_dir(job, folder, "solver.prototxt"), netproto.to_text(solver))
    return stage_dir


#: Characters a stage folder name keeps from its stage's name; the rest become "_".
_FOLDER_SAFE = re.compile(r"[^A-Za-z0-9+=.-]")
_FOLDER_NAME_MAX = 64


def stage_folder(index: int, stage_name: str) -> str:
    """The folder name of stage ``index``: its number and its name, made safe as one path component.

    Layer names are the user's strings and may hold ``/``, ``..`` or hundreds
    of characters; a folder built from them verbatim could land outside the
    work directory.  An altered or shortened name gets a digest of the
    original, so two stages never share a folder.
    """
    safe = _FOLDER_SAFE.sub("_", stage_name)[:_FOLDER_NAME_MAX]
    if safe != stage_name:
        safe += "-" + hashlib.sha256(stage_name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{index + 1:02d}-{safe}"


def _inside_work_dir(job: Job, *parts: str) -> str:
    """``parts`` joined under the work directory, refused if it resolves (links included) outside it."""
    root = os.path.realpath(job.work_dir)
    path = os.path.join(job.work_dir, *parts)
    resolved = os.path.realpath(path)
    if os.path.commonpath([root, resolved]) != root or resolved == root:
        raise UsageError(f"refusing to write {path}: it resolves outside the work directory {job.work_dir}")
    return path


def _write_eval_net(job: Job, fed: FedNet) -> str:
    """The stock net every stage's weights are measured with (see the module docstring)."""
    path = _inside_work_dir(job, "eval.prototxt")
    _write_text(path, netproto.to_text(fed.net))
    return path


def _train_val_net(job: Job):
    """The train/val net; a legacy V1 net (``layers``) upgraded the way Caffe upgrades it."""
    net = netproto.read_prototxt(job.net)
    if not net.layers:
        return net
    if net.layer:
        raise UsageError("mixes V1 layers (layers) with current ones (layer); Caffe refuses such a net", path=job.net)
    tool = caffe_tool("upgrade_net_proto_text")
    if tool is None:
        raise UsageError(
            "is a V1 net (layers { type: CONVOLUTION ... }); upgrade it with Caffe's upgrade_net_proto_text "
            "(tools/install_pycaffe.sh builds it) and pass the upgraded net",
            path=job.net,
        )
    with tempfile.TemporaryDirectory(prefix="cmpstore-upgrade-") as folder:
        upgraded = os.path.join(folder, "upgraded.prototxt")
        done = subprocess.run(
            [tool, job.net, upgraded], env=_caffe_env(job), capture_output=True, text=True, errors="replace"
        )
        if done.returncode != 0 or not os.path.exists(upgraded):
            lines = [line for line in done.stderr.splitlines() if line.strip()] or [f"exit status {done.returncode}"]
            raise UsageError(f"is a V1 net, and upgrade_net_proto_text failed on it: {lines[-1]}", path=job.net)
        net = netproto.read_prototxt(upgraded)
    job.log(f"{job.net} is a V1 net: upgraded with {tool}, as Caffe reads it")
    return net


def caffe_tool(name: str) -> str | None:
    """A Caffe tool: beside the pycaffe that ``import caffe`` would load (tools/install_pycaffe.sh), else on PATH."""
    spec = importlib.util.find_spec("caffe")
    if spec is not None and spec.origin:
        marker = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(spec.origin))), ".cmpstore-tools")
        if os.path.isfile(marker):
            with open(marker, encoding="utf-8") as stream:
                candidate = os.path.join(stream.read().strip(), name)
            if os.access(candidate, os.X_OK):
                return candidate
    return shutil.which(name)


def _caffe_env(job: Job) -> dict:
    """Caffe logs to stderr, never to files of its own in /tmp; everything, with ``verbose``."""
    return dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0" if job.verbose else "2")


def _progress_bar(job: Job, total: int):
    if not job.bar or total <= 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="finetune", unit="iter", file=sys.stderr, dynamic_ncols=True)


def _log(shared: _Run, line: str) -> None:
    """A line for the user, printed above the progress bar when there is one."""
    if shared.bar is not None:
        shared.bar.write(line, file=sys.stderr)
    else:
        shared.job.log(line)


def _inputs(job: Job) -> list[str]:
    return [job.net, job.solver, job.weights, *job.inputs]


def _check_inputs_outside_driver_files(job: Job) -> None:
    """Refuse an input that lies where the driver writes its own files (eval.prototxt, state.json, stage folders)."""
    root = os.path.realpath(job.work_dir)
    for path in _inputs(job):
        relative = os.path.relpath(os.path.realpath(path), root)
        first = relative.split(os.sep)[0]
        if first == ".." or os.path.isabs(relative):
            continue
        if first in ("eval.prototxt", STATE_FILE) or re.match(r"\d{2}-", first):
            raise UsageError(
                f"is an input of this run, and lies where the driver writes its own files in the work directory "
                f"{job.work_dir}; use another {option('work_dir')}",
                path=path,
            )


def _write_text(path: str, text: str) -> None:
    write_chunks(path, [text.encode("utf-8")], Placement(force=True))  # the driver's own files, rewritten


def _check_layers(net, job: Job) -> None:
    types = {layer.name: layer.type for layer in net.layer}
    allowed = set(STOCK_TO_CMP) if job.backend == "cmp" else netproto.CONV_TYPES | netproto.FC_TYPES
    for name in job.schedule.layers:
        if name not in types:
            raise UsageError(f"the schedule names layer '{name}', which this net does not have", path=job.net)
        if types[name] not in allowed:
            raise UsageError(
                f"layer '{name}' is a {types[name]}; "
                f"the {job.backend} backend prunes only {', '.join(sorted(allowed))}",
                path=job.net,
            )


def _check_weights(job: Job) -> None:
    """Fail in Python, not in a Caffe CHECK, when the pretrained file lacks a scheduled layer."""
    by_layer = api.load_weights(job.weights)
    missing = [name for name in job.schedule.layers if not by_layer.get(name)]
    if missing:
        raise UsageError(f"no weights for layer(s) {', '.join(missing)}", path=job.weights)


def _import_caffe(job: Job):
    # glog reads these once, when pycaffe loads it.
    for name, value in _caffe_env(job).items():
        if name.startswith("GLOG_"):
            os.environ[name] = value
    try:
        import caffe
    except ImportError as exc:
        raise UsageError(
            f"cannot import pycaffe ({exc}); build one with tools/install_pycaffe.sh and put the folder "
            f"it prints on PYTHONPATH, or use {option('dry_run', 'dry_run=True')} to only write the stage files"
        ) from None
    if job.backend == "cmp":
        missing = [t for t in CMP_TYPES if t not in caffe.layer_type_list()]
        if missing:
            raise UsageError(
                f"this Caffe ({os.path.dirname(caffe.__file__)}) does not register {', '.join(missing)}: "
                "the cmp backend needs Cmp layers, which tools/install_pycaffe.sh builds in (or the "
                f"DeepCompression-caffe fork); use {option('backend')} 'stock' with any Caffe, "
                f"or {option('dry_run', 'dry_run=True')} to only write the stage files"
            )
    if job.gpu:
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()
    caffe.set_random_seed(job.seed)
    return caffe


def _describe(layers: dict[str, dict]) -> str:
    return ", ".join(
        f"{name} {info['sparsity']:.1%} zero/{info['distinct_nonzero']} values" for name, info in layers.items()
    )


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]


class _State:
    """``state.json``: what has finished, and from which inputs.

    The identity holds the content of every input that shaped the finished
    stages (a digest of the weights, net, solver and data files, the
    schedule, backend and seed), not their paths: a resumed run with any of
    them changed is refused, naming what changed, rather than reusing stages
    trained from something else.
    """

    def __init__(self, path: str, identity: dict):
        self.path = path
        self.identity = identity
        self.pretrained_accuracy: float | None = None
        self.pretrained_scores: dict[str, float] = {}
        self.stages: dict[str, StageRecord] = {}

    @staticmethod
    def identity_of(job: Job) -> dict:
        data = job.data_spec or "the net's own data layers"
        if job.data_spec.endswith(".npz") and os.path.isfile(job.data_spec):
            data += f" sha256:{_file_digest(job.data_spec)}"
        return {
            "schedule": job.schedule.fingerprint(),
            "backend": job.backend,
            "weights": _file_digest(job.weights),
            "net": _file_digest(job.net),
            "solver": _file_digest(job.solver),
            "data": data,
            "seed": job.seed,
        }

    @classmethod
    def load(cls, job: Job) -> _State:
        identity = cls.identity_of(job)
        state = cls(_inside_work_dir(job, STATE_FILE), identity)
        if not os.path.exists(state.path):
            return state
        try:
            with open(state.path, encoding="utf-8") as stream:
                saved = json.load(stream)
            stored_identity = saved["identity"]
            stages = {name: StageRecord(**record) for name, record in saved["stages"].items()}
            pretrained = saved["pretrained_accuracy"]
            pretrained_scores = dict(saved.get("pretrained_scores", {}))
            if not isinstance(stored_identity, dict) or not (pretrained is None or isinstance(pretrained, float)):
                raise ValueError("identity or pretrained_accuracy of the wrong type")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise UsageError(
                f"cannot resume from this state file ({exc}); use another {option('work_dir')}", path=state.path
            ) from None
        if stored_identity != identity:
            changed = sorted(key for key in identity if stored_identity.get(key) != identity[key])
            raise UsageError(
                f"the work directory holds a run with another {', '.join(changed) or 'version'} (compared by "
                f"content); refusing to resume it: use another {option('work_dir')}, or delete this one to start "
                "over",
                path=state.path,
            )
        state.stages = stages
        state.pretrained_accuracy = pretrained
        state.pretrained_scores = pretrained_scores
        return state

    def finished(self, stage_dir: str) -> StageRecord | None:
        record = self.stages.get(os.path.basename(stage_dir))
        if record is None or not os.path.exists(record.weights):
            return None
        return record

    def add(self, stage_dir: str, record: StageRecord) -> None:
        self.stages[os.path.basename(stage_dir)] = record
        self.save()

    def save(self) -> None:
        document = {
            "identity": self.identity,
            "pretrained_accuracy": self.pretrained_accuracy,
            "pretrained_scores": self.pretrained_scores,
            "stages": {name: vars(record) for name, record in self.stages.items()},
        }
        _write_text(self.path, json.dumps(document, indent=2) + "\n")

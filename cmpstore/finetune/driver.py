"""Run a Deep Compression schedule with pycaffe: prune layer by layer, then weight-share, finetuning after each step.

Each stage is one finetuning run that starts from the previous stage's
weights.  A stage's files live in its own folder of the work directory
(``01-prune-conv1/net.prototxt``, ``solver.prototxt``, ``weights.caffemodel``)
and ``state.json`` records each finished stage, so an interrupted run resumes
after the last finished one.  Two backends share everything but the layers:

* ``stock``: any Caffe.  Stock layers; the masks and clusters come from
  :mod:`cmpstore.finetune.constraints`, and a solver callback masks and shares
  the weight diffs between backward and update.
* ``cmp``: a Caffe with CmpConvolution/CmpInnerProduct layers: cmpstore's own
  (``tools/install_pycaffe.sh`` builds them in) or the DeepCompression-caffe
  fork's.  The stage nets use them, and they prune, cluster and share
  gradients themselves, computing their masks and clusters when the stage
  loads the previous stage's weights.

Every net is evaluated as the stock net: the saved weights already hold the
pruned and shared values, so what is measured is exactly what is encoded.

Caffe aborts the whole process on a failed CHECK, so everything that can be
checked in Python (files, layer names, shapes, the schedule) is checked
before Caffe is touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import api
from ..atomic import Placement, check_output, write_chunks
from ..caffe import netproto
from ..errors import UsageError
from ..report import format_table
from .constraints import LayerConstraint, constrain, structure
from .data import BatchStream, Dataset
from .schedule import Schedule
from .stagefiles import STOCK_TO_CMP, FedNet, stage_solver, with_cmp_layers, with_input_layers

BACKENDS = ("stock", "cmp")
STATE_FILE = "state.json"
CMP_TYPES = tuple(STOCK_TO_CMP.values())


@dataclass
class Job:
    """Everything one run needs; see ``cmpstore finetune --help`` for the options."""

    net: str  # train/val prototxt
    solver: str  # solver prototxt
    weights: str  # pretrained .caffemodel
    schedule: Schedule
    dataset: Dataset
    work_dir: str
    output: str  # the encoded .cmps file
    backend: str = "stock"
    gpu: bool = False
    dry_run: bool = False
    seed: int = 0
    force: bool = False  # replace an existing output
    log: Callable[[str], None] = print


@dataclass
class StageRecord:
    name: str
    weights: str
    accuracy: float
    seconds: float
    layers: dict[str, dict] = field(default_factory=dict)  # name -> sparsity, distinct_nonzero


def run(job: Job) -> list[StageRecord]:
    """Run (or resume) every stage, then encode the result and log its report."""
    if job.backend not in BACKENDS:
        raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}, got {job.backend!r}")
    base_net = netproto.read_prototxt(job.net)
    base_solver = netproto.read_solver_prototxt(job.solver)
    _check_layers(base_net, job)
    fed = with_input_layers(base_net, job.dataset.train_data.shape[1:], job.net)
    if job.dataset.description:
        job.log(f"data: {job.dataset.description}")
    os.makedirs(job.work_dir, exist_ok=True)
    stage_dirs = [_write_stage_files(job, fed, base_solver, index) for index in range(len(job.schedule.stages))]
    if job.dry_run:
        for stage_dir in stage_dirs:
            job.log(f"wrote {os.path.join(stage_dir, 'net.prototxt')} and solver.prototxt")
        return []
    _check_weights(job)
    state = _State.load(job)  # another run in this work directory is the first thing to say
    check_output(job.output, Placement.of(job.force, [job.weights]))  # before hours of training, not after
    caffe = _import_caffe(job)
    eval_net = _write_eval_net(job, fed)
    if state.pretrained_accuracy is None:
        state.pretrained_accuracy = _evaluate(caffe, eval_net, job.weights, fed, job.dataset)
        state.save()
    job.log(f"pretrained: held-out top-1 {state.pretrained_accuracy:.2%}")
    weights = job.weights
    for index, (stage, stage_dir) in enumerate(zip(job.schedule.stages, stage_dirs, strict=True)):
        label = f"stage {index + 1}/{len(job.schedule.stages)} {stage.name}"
        record = state.finished(stage_dir)
        if record is None:
            record = _run_stage(caffe, job, fed, index, stage_dir, weights, eval_net)
            state.add(stage_dir, record)
        else:
            label += " (done before, resumed after it)"
        job.log(
            f"{label}: {stage.iterations} iterations in {record.seconds:.1f} s, "
            f"held-out top-1 {record.accuracy:.2%}; " + _describe(record.layers)
        )
        weights = record.weights
    encoded = api.encode(weights, job.output, force=job.force)
    job.log(f"encoded {weights} into {job.output}: {len(encoded):,} bytes")
    job.log(format_table(api.report(job.output)))
    return [state.finished(d) for d in stage_dirs]


def _run_stage(
    caffe, job: Job, fed: FedNet, index: int, stage_dir: str, start_weights: str, eval_net: str
) -> StageRecord:
    schedule, stage = job.schedule, job.schedule.stages[index]
    began = time.perf_counter()
    solver = caffe.get_solver(os.path.join(stage_dir, "solver.prototxt"))
    solver.net.copy_from(start_weights)
    constraints: list[LayerConstraint] = []
    if job.backend == "stock":
        for name, (ratio, clusters) in schedule.constraints_after(index).items():
            constraints.append(constrain(name, solver.net.params[name][0].data, ratio, clusters))
    feed = fed.feeds["train"]
    batches = BatchStream(job.dataset.train_data, job.dataset.train_labels, feed.batch_size, job.seed + index)
    data_blob, label_blob = solver.net.blobs[feed.data_top], solver.net.blobs[feed.label_top]

    def on_start():
        images, labels = batches.next()
        data_blob.data[...] = (images - feed.mean) * feed.scale
        label_blob.data[...] = labels

    def on_gradients_ready():
        for constraint in constraints:
            constraint.share(solver.net.params[constraint.name][0].diff)

    solver.add_callback(on_start, on_gradients_ready)
    solver.step(stage.iterations)
    weights = os.path.abspath(_inside_work_dir(job, os.path.basename(stage_dir), "weights.caffemodel"))
    partial = weights + ".partial"
    solver.net.save(partial)
    os.replace(partial, weights)
    layers = {}
    for name in schedule.layers:
        found = structure(name, solver.net.params[name][0].data)
        layers[name] = {"sparsity": found.sparsity, "distinct_nonzero": found.distinct_nonzero}
    seconds = time.perf_counter() - began
    accuracy = _evaluate(caffe, eval_net, weights, fed, job.dataset)
    return StageRecord(os.path.basename(stage_dir), weights, accuracy, seconds, layers)


def _evaluate(caffe, net_path: str, weights: str, fed: FedNet, dataset: Dataset) -> float:
    """Top-1 on the held-out data, in batches of the test phase's batch size."""
    net = caffe.Net(net_path, weights, caffe.TEST)
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
    solver = stage_solver(base_solver, net_path, stage.iterations, schedule.solver, job.gpu)
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
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        import caffe
    except ImportError as exc:
        raise UsageError(
            f"cannot import pycaffe ({exc}); build one with tools/install_pycaffe.sh and put the folder "
            "it prints on PYTHONPATH, or use --dry-run to only write the stage files"
        ) from None
    if job.backend == "cmp":
        missing = [t for t in CMP_TYPES if t not in caffe.layer_type_list()]
        if missing:
            raise UsageError(
                f"this Caffe ({os.path.dirname(caffe.__file__)}) does not register {', '.join(missing)}: "
                "the cmp backend needs Cmp layers, which tools/install_pycaffe.sh builds in (or the "
                "DeepCompression-caffe fork); use --backend stock with any Caffe, "
                "or --dry-run to only write the stage files"
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


class _State:
    """``state.json``: what has finished, and for which schedule, weights and backend."""

    def __init__(self, path: str, identity: dict):
        self.path = path
        self.identity = identity
        self.pretrained_accuracy: float | None = None
        self.stages: dict[str, StageRecord] = {}

    @classmethod
    def load(cls, job: Job) -> _State:
        identity = {
            "schedule": job.schedule.fingerprint(),
            "backend": job.backend,
            "weights": os.path.abspath(job.weights),
            "weights_size": os.path.getsize(job.weights),
            "net": os.path.abspath(job.net),
        }
        state = cls(_inside_work_dir(job, STATE_FILE), identity)
        if not os.path.exists(state.path):
            return state
        try:
            with open(state.path, encoding="utf-8") as stream:
                saved = json.load(stream)
            stored_identity = saved["identity"]
            stages = {name: StageRecord(**record) for name, record in saved["stages"].items()}
            pretrained = saved["pretrained_accuracy"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(
                f"cannot resume from this state file ({exc}); use another --work-dir", path=state.path
            ) from None
        if stored_identity != identity:
            changed = sorted(key for key in identity if stored_identity.get(key) != identity[key])
            raise UsageError(
                f"the work directory holds a run with another {', '.join(changed)}; use another --work-dir",
                path=state.path,
            )
        state.stages = stages
        state.pretrained_accuracy = pretrained
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
            "stages": {name: vars(record) for name, record in self.stages.items()},
        }
        _write_text(self.path, json.dumps(document, indent=2) + "\n")

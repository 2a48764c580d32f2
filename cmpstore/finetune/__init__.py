"""Finetuning for Deep Compression: the layer-wise prune-then-quantize schedule, run with pycaffe.

:func:`finetune` is the entry point (``cmpstore finetune`` on the command
line).  :mod:`~cmpstore.finetune.schedule` describes the stages,
:mod:`~cmpstore.finetune.datalayers` checks the net's own data layers,
:mod:`~cmpstore.finetune.data` provides numpy data (the digits, or any .npz),
:mod:`~cmpstore.finetune.stagefiles` writes each stage's net and solver,
:mod:`~cmpstore.finetune.constraints` keeps pruned weights at zero and clusters
shared on a stock Caffe, and :mod:`~cmpstore.finetune.driver` runs it all.
Only the driver imports ``caffe``, and only when a stage runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from ..atomic import Placement, check_output
from ..compression.settings import checked_seed
from ..errors import UsageError
from .data import load_dataset
from .driver import BACKENDS, Job, StageRecord, run
from .schedule import LayerSetting, Schedule, layer_wise_schedule, load_schedule, parse_layer_flag

__all__ = ["BACKENDS", "StageRecord", "finetune", "plan"]


def finetune(
    net: str | os.PathLike,
    solver: str | os.PathLike,
    weights: str | os.PathLike,
    work_dir: str | os.PathLike,
    *,
    schedule: str | os.PathLike | Schedule | None = None,
    layers: Sequence[str] = (),
    iterations: Sequence[int] | None = None,
    data: str | None = None,
    backend: str = "stock",
    gpu: bool = False,
    output: str | os.PathLike | None = None,
    dry_run: bool = False,
    seed: int = 0,
    force: bool = False,
    snapshot_every: int | None = None,
    verbose: bool = False,
    progress_bar: bool = False,
    log: Callable[[str], None] = print,
) -> list[StageRecord]:
    """Run (or resume) a Deep Compression schedule with pycaffe, then encode the result.

    Parameters
    ----------
    net, solver, weights : path
        The train/val net prototxt, the solver prototxt (its ``test_iter``
        and ``test_interval`` say how the TEST phase evaluates), and the
        pretrained ``.caffemodel`` to start from.
    work_dir : path
        Each stage's files and weights, and ``state.json``; a rerun resumes.
    schedule : path or Schedule, optional
        A JSON schedule (see :mod:`~cmpstore.finetune.schedule`); or else
    layers : sequence of str
        ``NAME:SPARSE_RATIO:CLASS_NUM`` in pruning order, for the fork's
        layer-wise schedule, with one count per stage in ``iterations``.
    iterations : sequence of int, optional
        Iterations per stage; replaces a schedule file's.
    data : str, optional
        Default: the net's own data layers (Data on LMDB or LevelDB,
        ImageData, HDF5Data, ... with their ``transform_param``), read by
        Caffe.  Or numpy data fed into Input layers: ``mnist``,
        ``mnist:PATH``, ``mnist5k``, ``mnist5k:PATH`` or an ``.npz`` (see
        :func:`~cmpstore.finetune.data.load_dataset`).
    backend : {"stock", "cmp"}
        Masks and sharing from Python callbacks on any Caffe, or Cmp layers.
    gpu : bool
        Run Caffe on the GPU.
    output : path, optional
        The encoded result; default ``WORK_DIR/compressed.cmps``.
    dry_run : bool
        Only write each stage's net and solver prototxt.
    force : bool
        Replace an existing ``output``.
    snapshot_every : int, optional
        Iterations between the snapshots a stopped stage resumes from;
        default the solver's ``snapshot``, else 1000.  A stage stopped by
        Ctrl-C or SIGTERM also snapshots where it stopped.
    verbose : bool
        Show Caffe's own log (its ``display`` lines among them) on stderr.
    progress_bar : bool
        One progress bar over the whole schedule (stage, iteration, loss, ETA) on stderr.

    Returns
    -------
    list of StageRecord
        One per stage (empty for a dry run).
    """
    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    seed = checked_seed(seed, "seed")
    if snapshot_every is not None and (
        isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int) or not 0 < snapshot_every < 2**31
    ):
        raise UsageError(
            f"snapshot_every must be a whole number of iterations from 1 to 2^31-1, got {snapshot_every!r}"
        )
    work_dir = os.fspath(work_dir)
    job = Job(
        net=os.fspath(net),
        solver=os.fspath(solver),
        weights=os.fspath(weights),
        schedule=_schedule(schedule, layers, iterations),
        dataset=load_dataset(data) if data is not None else None,
        work_dir=work_dir,
        output=os.fspath(output) if output is not None else os.path.join(work_dir, "compressed.cmps"),
        backend=backend,
        gpu=gpu,
        dry_run=dry_run,
        seed=seed,
        force=force,
        snapshot_every=snapshot_every,
        verbose=verbose,
        bar=progress_bar,
        data_spec=data or "",
        inputs=tuple(
            os.fspath(path)
            for path in (schedule, data)
            if isinstance(path, (str, os.PathLike)) and os.path.isfile(os.fspath(path))
        ),
        log=log,
    )
    return run(job)


def _schedule(schedule, layers: Sequence[str], iterations: Sequence[int] | None) -> Schedule:
    if (schedule is None) == (not layers):
        raise UsageError("give either a schedule or layers (with iterations)")
    if schedule is not None:
        loaded = schedule if isinstance(schedule, Schedule) else load_schedule(schedule)
        return loaded.with_iterations(list(iterations)) if iterations is not None else loaded
    if iterations is None:
        raise UsageError("layers need iterations: one count per layer, then one for quantization")
    return layer_wise_schedule(dict(parse_layer_flag(text) for text in layers), list(iterations))


def plan(
    net: str | os.PathLike,
    solver: str | os.PathLike,
    weights: str | os.PathLike,
    work_dir: str | os.PathLike,
    output: str | os.PathLike,
    *,
    target_bytes: int | None = None,
    target_ratio: float | None = None,
    max_drop: float | None = None,
    layers: Sequence[str] = (),
    data: str | None = None,
    iterations: int = 20000,
    kept_fractions: Sequence[float] | None = None,
    cluster_counts: Sequence[int] | None = None,
    min_clusters: int | None = None,
    max_seconds: float | None = None,
    sensitivity_json: str | os.PathLike | None = None,
    plot: str | os.PathLike | None = None,
    gpu: bool = False,
    force: bool = False,
    log: Callable[[str], None] = print,
):
    """Measure each layer's sensitivity on held-out data and write a schedule that meets a target.

    See :mod:`cmpstore.finetune.planner`.  The net's TEST phase (or ``data``'s
    held-out part, e.g. ``mnistval``) must be held-out training data, never
    the test set.  Exactly one of ``target_bytes``, ``target_ratio`` and
    ``max_drop`` (a fraction: 0.005 for half a point) says what to meet.
    Writes the schedule JSON to ``output``, which ``finetune`` runs as it
    is; returns the :class:`~cmpstore.finetune.planner.Plan`.
    """
    from ..caffe import netproto
    from . import planner

    targets = [value is not None for value in (target_bytes, target_ratio, max_drop)]
    if sum(targets) != 1:
        raise UsageError("give exactly one of target_bytes, target_ratio and max_drop")
    if target_ratio is not None and not target_ratio > 1:
        raise UsageError(f"target_ratio must be more than 1, got {target_ratio!r}")
    if max_drop is not None and not 0 <= max_drop < 1:
        raise UsageError(f"max_drop must be a fraction in [0, 1), got {max_drop!r}")
    if min_clusters is not None and (isinstance(min_clusters, bool) or not isinstance(min_clusters, int) or
                                     min_clusters < 1):  # fmt: skip
        raise UsageError(f"min_clusters must be a whole number of at least 1, got {min_clusters!r}")
    net_param = netproto.read_prototxt(net)
    compressible = [layer.name for layer in net_param.layer if layer.type in netproto.CONV_TYPES | netproto.FC_TYPES]
    chosen = list(layers) or compressible
    if not chosen:
        raise UsageError("no compressible layer (Convolution or InnerProduct) to plan", path=os.fspath(net))
    placeholder = layer_wise_schedule({name: LayerSetting(0.5, 16) for name in chosen}, [1] * (len(chosen) + 1))
    work_dir = os.fspath(work_dir)
    job = Job(
        net=os.fspath(net),
        solver=os.fspath(solver),
        weights=os.fspath(weights),
        schedule=placeholder,
        dataset=load_dataset(data) if data is not None else None,
        work_dir=work_dir,
        output=os.fspath(output),
        gpu=gpu,
        data_spec=data or "",
        log=log,
    )
    inputs = [os.fspath(path) for path in (net, solver, weights)]
    for path in (output, sensitivity_json, plot):  # refused before the sweep, not after it
        if path is not None:
            check_output(path, Placement.of(force, inputs))
    sensitivity = planner.measure_sensitivity(
        job,
        chosen,
        tuple(kept_fractions) if kept_fractions else planner.KEPT_FRACTIONS,
        tuple(cluster_counts) if cluster_counts else planner.CLUSTER_COUNTS,
        max_seconds,
        log,
    )
    if sensitivity_json is not None:
        planner.write_json(sensitivity.to_json(), os.fspath(sensitivity_json), force, inputs)
    if plot is not None:
        planner.plot_sensitivity(sensitivity, os.fspath(plot), force, inputs)
    if target_ratio is not None:
        from .. import api

        target_bytes = int(len(api.caffemodel_bytes(weights)) / target_ratio)
    proposal = planner.propose(sensitivity, os.fspath(weights), target_bytes=target_bytes, max_drop=max_drop,
                               iterations=iterations,
                               min_clusters=planner.MIN_CLUSTERS if min_clusters is None else min_clusters)  # fmt: skip
    planner.write_json(proposal.schedule, os.fspath(output), force, inputs)
    log(
        f"wrote {os.fspath(output)}: {proposal.predicted_bytes:,} B predicted ({proposal.predicted_ratio:.1f}x) "
        f"before finetuning; the layers' drops without retraining add up to {proposal.predicted_drop:.2%}"
    )
    return proposal

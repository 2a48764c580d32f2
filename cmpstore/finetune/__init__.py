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

from ..compression.settings import checked_seed
from ..errors import UsageError
from .data import load_dataset
from .driver import BACKENDS, Job, StageRecord, run
from .schedule import Schedule, layer_wise_schedule, load_schedule, parse_layer_flag

__all__ = ["BACKENDS", "StageRecord", "finetune"]


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

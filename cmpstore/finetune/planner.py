"""Plan a Deep Compression schedule for a net: per-layer sensitivity, then the settings that meet a target.

Han et al. (2015, Figure 6) chose each layer's pruning ratio from its
sensitivity: the accuracy with that layer alone pruned to a range of kept
fractions.  The planner measures exactly that, without retraining, on the
net's TEST phase (or the numpy held-out data), which must be held-out
training data: the test set chooses nothing.  It measures weight sharing the
same way, one layer at a time and a range of codebook sizes, on the layer
already pruned to its smallest kept fraction within one point of the
baseline: pruned weights share worse than the full set (unpruned, LeNet's
fc1 loses 0.4 points at 2 clusters; pruned, far more), so sharing measured
unpruned would plan codebooks that the pruned layer cannot afford.

From the sensitivities and each layer's exact encoded bytes at every
(kept fraction, codebook size) (the layer's weights pruned, shared and coded
as ``cmpstore encode`` codes them), the proposal is greedy: every layer
starts dense with the largest codebook, and each step takes the move, in
any layer, that saves the most bytes per point of accuracy lost, until the
size target is met (``target_bytes``) or the next move would take the sum
of the layers' drops past the floor (``max_drop``).  The drops are those
without retraining, added up over layers (Han et al.'s assumption): a
measure for allocating, not a promise, since finetuning recovers most of
them.  So a layer that is cheap to keep and costly to prune (a first
convolution, a last classifier) stays dense, while the large fc layers go
to a few percent.  The predicted size is exact for the settings before
finetuning (which moves the surviving weights and changes their entropy a
little; on LeNet the finetuned file was 3-4 % larger).

The schedule prunes gradually, all layers together: each stage keeps at
least 40 % of what the stage before kept in every layer (kept fractions
geometric from 1 to the target), with more iterations for the later,
harder stages, then shares every layer in one last stage.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import api
from ..atomic import Placement, atomic_output, write_chunks
from ..cmps.writer import blob_payload_bytes
from ..compression.transform import prune_and_share
from ..errors import UsageError
from ..errors import option as option_name
from . import driver
from .schedule import schedule_from_json

#: Kept fractions and codebook sizes swept by default.
KEPT_FRACTIONS = (1.0, 0.7, 0.5, 0.35, 0.25, 0.15, 0.1, 0.07, 0.05, 0.03, 0.02, 0.015, 0.01)
CLUSTER_COUNTS = (256, 64, 32, 16, 8, 4, 2)
#: Sharing is measured on each layer pruned to its smallest kept fraction that loses at most this.
SHARING_REFERENCE_DROP = 0.01
#: A greedy move's accuracy cost is its drop plus this (about the noise of 10,000 held-out digits):
#: moves that measure as free are taken by bytes saved, not all at once.
DROP_NOISE = 0.001
#: Each pruning stage keeps at least 1 / PRUNE_STEP of what the stage before kept.
PRUNE_STEP = 2.5
#: The fewest shared values a plan gives a layer by default.  Without retraining, LeNet-5's sweep shows no
#: loss even at 2 values; after finetuning, on its held-out digits, 2 values in every layer lost 0.43 points
#: and 4 lost 0.13 against 8 and 16 (the README's planner section).
MIN_CLUSTERS = 8


@dataclass
class Sensitivity:
    """Accuracy on held-out data with one layer changed at a time."""

    baseline: float
    pruning: dict[str, dict[float, float]] = field(default_factory=dict)  # layer -> kept fraction -> accuracy
    sharing: dict[str, dict[int, float]] = field(default_factory=dict)  # layer -> clusters -> accuracy
    #: layer -> the kept fraction its sharing was measured at (1.0: unpruned)
    sharing_kept: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    held_out: str = ""

    def drop(self, layer: str, kept: float, clusters: int) -> float:
        """Accuracy lost, without retraining, with ``layer`` kept at ``kept`` and shared among ``clusters``."""
        pruned = max(0.0, self.baseline - self.pruning[layer][kept])
        reference = self.pruning[layer].get(self.sharing_kept.get(layer, 1.0), self.baseline)
        return pruned + max(0.0, reference - self.sharing[layer][clusters])

    def to_json(self) -> dict:
        return {
            "baseline": self.baseline,
            "held_out": self.held_out,
            "seconds": self.seconds,
            "pruning": {layer: {f"{kept:g}": acc for kept, acc in by.items()} for layer, by in self.pruning.items()},
            "sharing": {layer: {str(k): acc for k, acc in by.items()} for layer, by in self.sharing.items()},
            "sharing_measured_at_kept": {layer: kept for layer, kept in self.sharing_kept.items()},
        }


@dataclass
class Plan:
    """A proposed schedule (the driver's JSON), and how it was chosen."""

    schedule: dict
    settings: dict[str, tuple[float, int]]  # layer -> (sparse_ratio, class_num)
    predicted_drop: float  # the layers' drops without retraining, added up
    predicted_bytes: int
    dense_bytes: int

    @property
    def predicted_ratio(self) -> float:
        return self.dense_bytes / self.predicted_bytes


def measure_sensitivity(
    job: driver.Job,
    layers: list[str],
    kept_fractions=KEPT_FRACTIONS,
    cluster_counts=CLUSTER_COUNTS,
    max_seconds: float | None = None,
    log: Callable[[str], None] = print,
) -> Sensitivity:
    """Each layer alone pruned to each kept fraction, then alone pruned and shared with each cluster count.

    Sharing is measured with the layer pruned to its smallest kept fraction
    that loses at most :data:`SHARING_REFERENCE_DROP` (see the module docstring).
    """
    shared = driver.prepare(job)
    if job.dataset is not None and job.dataset.test_labels.size == 0:
        raise UsageError("the held-out split is empty")
    caffe = driver._import_caffe(job)
    eval_net = driver._write_eval_net(job, shared.fed)
    net = caffe.Net(eval_net, job.weights, caffe.TEST)
    began = time.perf_counter()
    baseline = _score(net, shared)
    per_evaluation = time.perf_counter() - began
    evaluations = len(layers) * (len(kept_fractions) + len(cluster_counts))
    if max_seconds is not None and per_evaluation * evaluations > max_seconds:
        raise UsageError(
            f"the sweep would take about {per_evaluation * evaluations:.0f} s ({evaluations} evaluations of "
            f"{per_evaluation:.1f} s), more than {option_name('max_seconds')} {max_seconds:g}; sweep fewer layers, "
            "fractions or cluster counts, or evaluate on fewer TEST batches"
        )
    held_out = job.dataset.description if job.dataset is not None else f"the TEST phase of {job.net}"
    result = Sensitivity(baseline, held_out=held_out)
    log(f"baseline held-out accuracy {baseline:.2%}; {evaluations} evaluations of about {per_evaluation:.1f} s")
    for layer in layers:
        blob = net.params[layer][0]
        original = np.array(blob.data, copy=True)
        result.pruning[layer] = {}
        for kept in kept_fractions:
            blob.data[...] = prune_and_share(original.copy(), 1.0 - kept if kept < 1 else None, None).weights
            result.pruning[layer][kept] = _score(net, shared)
        within = [k for k, acc in result.pruning[layer].items() if baseline - acc <= SHARING_REFERENCE_DROP + 1e-9]
        reference = min(within, default=1.0)
        result.sharing_kept[layer] = reference
        ratio = 1.0 - reference if reference < 1 else None
        result.sharing[layer] = {}
        for clusters in cluster_counts:
            blob.data[...] = prune_and_share(original.copy(), ratio, clusters).weights
            result.sharing[layer][clusters] = _score(net, shared)
        blob.data[...] = original
        pruned = ", ".join(f"{k:g}:{a:.1%}" for k, a in result.pruning[layer].items())
        sharing = ", ".join(f"{k}:{a:.1%}" for k, a in result.sharing[layer].items())
        log(f"{layer}: kept {pruned}; shared at kept {reference:g}: {sharing}")
    result.seconds = time.perf_counter() - began
    return result


def _score(net, shared) -> float:
    if shared.fed.own_data:
        scores = driver._average_scores(net, shared.scores, shared.test_iter)
    else:
        scores = {shared.scores[0].label: driver._numpy_top1(net, shared.fed, shared.job.dataset)}
    return driver._primary(scores, shared.scores)


def propose(
    sensitivity: Sensitivity,
    weights_path: str,
    *,
    target_bytes: int | None = None,
    max_drop: float | None = None,
    iterations: int = 20000,
    solver: dict | None = None,
    min_clusters: int = MIN_CLUSTERS,
) -> Plan:
    """The settings and schedule for a size target or an accuracy floor (see the module docstring).

    No layer gets fewer than ``min_clusters`` shared values (see :data:`MIN_CLUSTERS`), unless the
    sweep measured no larger codebook.
    """
    if (target_bytes is None) == (max_drop is None):
        raise UsageError("give exactly one of a size target (bytes or ratio) and a largest accuracy drop")
    model = api.load_model(weights_path)
    dense_bytes = len(api.caffemodel_bytes(model))
    layers = list(sensitivity.pruning)
    if not layers:
        raise UsageError("the net has no compressible layer (Convolution or InnerProduct) to plan")
    weights = model.weights_by_layer()
    options = {layer: _options(sensitivity, layer, weights[layer][0], min_clusters) for layer in layers}
    fixed = len(api.encode(model)) - sum(_coded_bytes(weights[layer][0]) for layer in layers)
    settings = {layer: max(options[layer], key=lambda option: (option.kept, option.clusters)) for layer in layers}

    def estimate() -> int:
        return fixed + sum(option.bytes for option in settings.values())

    def exact() -> int:
        ratios = {layer: 1.0 - option.kept for layer, option in settings.items() if option.kept < 1}
        clusters = {layer: option.clusters for layer, option in settings.items()}
        compressed, _ = api.compress_weights(model, ratios, clusters)
        return len(api.encode(compressed))

    def within_floor(move) -> bool:
        return max_drop is None or _total_drop(settings, move) <= max_drop + 1e-9

    while max_drop is not None or estimate() > target_bytes or exact() > target_bytes:
        move = _best_move(settings, options, within_floor)
        if move is None and max_drop is not None:
            break
        if move is None:
            best = exact()
            raise UsageError(
                f"no plan reaches {target_bytes:,} bytes ({dense_bytes / target_bytes:.1f}x) within the swept "
                f"fractions and cluster counts: the smallest found is {best:,} bytes ({dense_bytes / best:.1f}x)"
            )
        layer, option = move
        settings[layer] = option
    predicted = exact()
    drop = sum(option.drop for option in settings.values())
    chosen = {layer: (round(1.0 - option.kept, 6), option.clusters) for layer, option in settings.items()}
    schedule = _schedule(chosen, iterations, solver or {}, sensitivity, drop, predicted, dense_bytes)
    schedule_from_json(schedule)  # the driver runs it unchanged: check it as the driver will
    return Plan(schedule, chosen, drop, predicted, dense_bytes)


@dataclass(frozen=True)
class _Option:
    """One setting of one layer: what it keeps, its codebook, its coded bytes and its drop without retraining."""

    kept: float
    clusters: int
    bytes: int
    drop: float


def _options(sensitivity: Sensitivity, layer: str, values: np.ndarray, min_clusters: int) -> list[_Option]:
    options = []
    counts = [k for k in sensitivity.sharing[layer] if k >= min_clusters] or [max(sensitivity.sharing[layer])]
    for kept in sensitivity.pruning[layer]:
        for clusters in counts:
            ratio = 1.0 - kept if kept < 1 else None
            coded = _coded_bytes(prune_and_share(values.ravel().copy(), ratio, clusters).weights)
            options.append(_Option(kept, clusters, coded, sensitivity.drop(layer, kept, clusters)))
    return options


def _coded_bytes(values: np.ndarray) -> int:
    return blob_payload_bytes(np.ascontiguousarray(values.ravel()))


def _best_move(settings: dict[str, _Option], options: dict[str, list[_Option]], allowed):
    """The ``allowed`` move to a setting of one layer, no larger in kept fraction or codebook, saving most bytes
    per drop."""
    best, best_value = None, 0.0
    for layer, current in settings.items():
        for option in options[layer]:
            if option.kept > current.kept or option.clusters > current.clusters or option.bytes >= current.bytes:
                continue
            if not allowed((layer, option)):
                continue
            value = (current.bytes - option.bytes) / (max(0.0, option.drop - current.drop) + DROP_NOISE)
            if value > best_value:
                best, best_value = (layer, option), value
    return best


def _total_drop(settings: dict[str, _Option], move) -> float:
    layer, option = move
    return sum(setting.drop for name, setting in settings.items() if name != layer) + option.drop


def _schedule(settings, iterations, solver, sensitivity, drop, predicted, dense_bytes) -> dict:
    kept = {layer: 1.0 - ratio for layer, (ratio, _) in settings.items() if ratio > 0}
    stages: list[dict] = []
    if kept:
        count = max(1, math.ceil(math.log(1.0 / min(kept.values())) / math.log(PRUNE_STEP) - 1e-9))
        for step in range(1, count + 1):
            ratios = {
                layer: settings[layer][0]
                if step == count
                else min(settings[layer][0], round(1 - k ** (step / count), 4))
                for layer, k in kept.items()
            }
            stages.append({"prune": {layer: ratio for layer, ratio in ratios.items() if ratio > 0}})
    stages.append({"quantize": list(settings)})
    # Later stages prune what is left of weights that matter more: they get more iterations.
    shares = [step + 2 for step in range(1, len(stages))] + [len(stages) + 1]
    for stage, share in zip(stages, shares, strict=True):
        stage["iterations"] = max(100, int(round(iterations * share / sum(shares), -2)))
    return {
        "description": (
            f"Planned by cmpstore plan on {sensitivity.held_out} (held-out baseline {sensitivity.baseline:.2%}): "
            f"each step the setting that saves most bytes per point lost, one layer at a time without retraining "
            f"(their drops add up to {drop:.2%}; finetuning recovers most); {predicted:,} B predicted before "
            f"finetuning ({dense_bytes / predicted:.1f}x). Pruned in {len(stages) - 1} stages, each keeping at "
            f"least {1 / PRUNE_STEP:.0%} of the last, then shared."
        ),
        "layers": {layer: {"sparse_ratio": ratio, "class_num": k} for layer, (ratio, k) in settings.items()},
        "stages": stages,
        **({"solver": solver} if solver else {}),
    }


def plot_sensitivity(sensitivity: Sensitivity, path: str, force: bool = False, inputs=()) -> None:
    """Accuracy against the fraction of weights kept, one curve per layer (Han et al. 2015, Figure 6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for layer, by_kept in sensitivity.pruning.items():
        kept = sorted(by_kept)
        axes.plot([100 * k for k in kept], [100 * by_kept[k] for k in kept], marker="o", label=layer)
    axes.set_xscale("log")
    axes.set_xlabel("weights kept (%)")
    axes.set_ylabel("held-out accuracy (%)")
    axes.set_title("Sensitivity to pruning, one layer at a time, without retraining")
    axes.legend(fontsize="small")
    figure.tight_layout()
    with atomic_output(path, Placement.of(force, inputs)) as stream:
        figure.savefig(stream, dpi=120, format="png")
    plt.close(figure)


def write_json(document: dict, path: str, force: bool, inputs=()) -> None:
    write_chunks(path, [(json.dumps(document, indent=2) + "\n").encode()], Placement.of(force, inputs))

"""Plan a Deep Compression schedule for a net: per-layer sensitivity, then the ratios that meet a target.

Han et al. (2015, Figure 6) chose each layer's pruning ratio from its
sensitivity: the accuracy with that layer alone pruned to a range of kept
fractions.  The planner measures exactly that, and the same for weight
sharing (that layer alone clustered to a range of codebook sizes), without
retraining, on the net's TEST phase (or the numpy held-out data), which must
be held-out training data: the test set chooses nothing.

From the sensitivities it proposes one setting per layer: for a tolerance
``t``, each layer gets the smallest kept fraction, and the fewest clusters,
whose accuracy drop alone is at most ``t``.  The size of that setting is
cmpstore's own: the weights are pruned and shared as the settings say and
encoded, so the bytes are what ``cmpstore encode`` gives (before finetuning
moves the surviving weights, which changes their entropy a little).  A size
target (``target_bytes``) takes the smallest tolerance that meets it; an
accuracy floor (``max_drop``) takes ``t = max_drop``.  The schedule prunes the
layers one stage each, in the net's order (a layer kept below 20 % in two
steps, as iterative pruning does), then shares them all, with iterations in
proportion to the weights each stage touches.
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
from ..compression.transform import prune_and_share
from ..errors import UsageError
from ..errors import option as option_name
from . import driver
from .schedule import schedule_from_json

#: Kept fractions and codebook sizes swept by default.
KEPT_FRACTIONS = (1.0, 0.7, 0.5, 0.35, 0.25, 0.15, 0.1, 0.07, 0.05, 0.03, 0.02, 0.01)
CLUSTER_COUNTS = (256, 64, 32, 16, 8, 4, 2)


@dataclass
class Sensitivity:
    """Accuracy on held-out data with one layer changed at a time."""

    baseline: float
    pruning: dict[str, dict[float, float]] = field(default_factory=dict)  # layer -> kept fraction -> accuracy
    sharing: dict[str, dict[int, float]] = field(default_factory=dict)  # layer -> clusters -> accuracy
    seconds: float = 0.0
    held_out: str = ""

    def to_json(self) -> dict:
        return {
            "baseline": self.baseline,
            "held_out": self.held_out,
            "seconds": self.seconds,
            "pruning": {layer: {f"{kept:g}": acc for kept, acc in by.items()} for layer, by in self.pruning.items()},
            "sharing": {layer: {str(k): acc for k, acc in by.items()} for layer, by in self.sharing.items()},
        }


@dataclass
class Plan:
    """A proposed schedule (the driver's JSON), and how it was chosen."""

    schedule: dict
    settings: dict[str, tuple[float, int]]  # layer -> (sparse_ratio, class_num)
    tolerance: float
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
    """Each layer alone pruned to each kept fraction, and alone shared with each cluster count."""
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
        result.sharing[layer] = {}
        for clusters in cluster_counts:
            blob.data[...] = prune_and_share(original.copy(), None, clusters).weights
            result.sharing[layer][clusters] = _score(net, shared)
        blob.data[...] = original
        pruned = ", ".join(f"{k:g}:{a:.1%}" for k, a in result.pruning[layer].items())
        log(f"{layer}: kept {pruned}")
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
) -> Plan:
    """The settings and schedule for a size target or an accuracy floor (see the module docstring)."""
    if (target_bytes is None) == (max_drop is None):
        raise UsageError("give exactly one of a size target (bytes or ratio) and a largest accuracy drop")
    model = api.load_model(weights_path)
    dense_bytes = len(api.caffemodel_bytes(model))
    layers = list(sensitivity.pruning)
    if not layers:
        raise UsageError("the net has no compressible layer (Convolution or InnerProduct) to plan")
    drops = sorted(
        {0.0}
        | {max(0.0, sensitivity.baseline - a) for by in sensitivity.pruning.values() for a in by.values()}
        | {max(0.0, sensitivity.baseline - a) for by in sensitivity.sharing.values() for a in by.values()}
    )
    sizes: dict[float, tuple[int, dict]] = {}

    def size_at(tolerance: float) -> tuple[int, dict]:
        if tolerance not in sizes:
            settings = _settings(sensitivity, tolerance)
            ratios = {layer: ratio for layer, (ratio, _) in settings.items() if ratio > 0}
            clusters = {layer: k for layer, (_, k) in settings.items()}
            compressed, _ = api.compress_weights(model, ratios, clusters)
            sizes[tolerance] = (len(api.encode(compressed)), settings)
        return sizes[tolerance]

    if max_drop is not None:
        tolerance = max_drop
    else:
        reachable = [drop for drop in drops if size_at(drop)[0] <= target_bytes]
        if not reachable:
            best = min(size_at(drop)[0] for drop in drops)
            raise UsageError(
                f"no plan reaches {target_bytes:,} bytes ({dense_bytes / target_bytes:.1f}x) within the swept "
                f"fractions and cluster counts: the smallest found is {best:,} bytes ({dense_bytes / best:.1f}x)"
            )
        tolerance = min(reachable)
    predicted, settings = size_at(tolerance)
    schedule = _schedule(model, settings, iterations, solver or {}, tolerance, sensitivity, predicted, dense_bytes)
    schedule_from_json(schedule)  # the driver runs it unchanged: check it as the driver will
    return Plan(schedule, settings, tolerance, predicted, dense_bytes)


def _settings(sensitivity: Sensitivity, tolerance: float) -> dict[str, tuple[float, int]]:
    settings = {}
    # Accuracies are means of batches: a drop equal to the tolerance must not miss it by a rounding.
    within = tolerance + 1e-9
    for layer, by_kept in sensitivity.pruning.items():
        kept = min((k for k, acc in by_kept.items() if sensitivity.baseline - acc <= within), default=1.0)
        by_clusters = sensitivity.sharing[layer]
        clusters = min((k for k, acc in by_clusters.items() if sensitivity.baseline - acc <= within), default=256)
        settings[layer] = (round(1.0 - kept, 6), clusters)
    return settings


def _schedule(model, settings, iterations, solver, tolerance, sensitivity, predicted, dense_bytes) -> dict:
    sizes = {layer: int(np.prod(blobs[0].shape)) for layer, blobs in model.weights_by_layer().items()}
    pruned = [layer for layer, (ratio, _) in settings.items() if ratio > 0]
    stages: list[dict] = []
    # A layer kept below 20 % first goes halfway (in kept fraction, geometrically), as iterative pruning does.
    early = {layer: settings[layer][0] for layer in pruned if settings[layer][0] > 0.8}
    if early:
        stages.append({"prune": {layer: round(1 - math.sqrt(1 - r), 4) for layer, r in early.items()}})
    stages += [{"prune": [layer]} for layer in pruned]
    stages.append({"quantize": list(settings)})
    weights_touched = [sum(sizes[layer] for layer in (stage.get("prune") or stage.get("quantize"))) for stage in stages]
    total = sum(weights_touched)
    for stage, touched in zip(stages, weights_touched, strict=True):
        stage["iterations"] = max(100, int(round(iterations * touched / total, -2)))
    return {
        "description": (
            f"Planned by cmpstore plan on {sensitivity.held_out} (held-out baseline {sensitivity.baseline:.2%}): "
            f"each layer at the smallest kept fraction and codebook whose drop alone, without retraining, is at "
            f"most {tolerance:.2%}; {predicted:,} B predicted before finetuning ({dense_bytes / predicted:.1f}x)."
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

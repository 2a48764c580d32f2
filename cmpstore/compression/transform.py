"""Prune and weight-share the weight blobs of a model, layer by layer.

Applies :mod:`cmpstore.compression.prune` and :mod:`cmpstore.compression.kmeans` to the first blob
of every Convolution/Deconvolution/InnerProduct layer (and their Cmp
variants) that a setting names.  Biases and all other blobs are untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..caffe import netproto
from ..caffe.model import Model, Payload
from ..errors import ModelError, UsageError, option
from ..progress import silent
from . import kmeans, settings
from .prune import prune
from .selectors import check_names, setting_for


@dataclass
class LayerOutcome:
    """What pruning and quantization did to one layer."""

    name: str
    type: str
    weights: int
    kept: int
    ratio: float | None = None
    clusters: int | None = None  # asked for
    centroids: int | None = None  # in use after clustering
    init: str | None = None
    iterations: int | None = None
    mse: float | None = None  # mean squared quantization error over the kept weights


def compress_weights(
    model: Model,
    ratios: Mapping[str, float] | None = None,
    clusters: Mapping[str, int] | None = None,
    init: str = "linear",
    seed: int = 0,
    empty: str = "drop",
    progress: Callable[[str, str], None] = silent,
) -> tuple[Model, list[LayerOutcome]]:
    """Prune, then weight-share, the layers that ``ratios`` / ``clusters`` select.

    Parameters
    ----------
    ratios : mapping
        ``sparse_ratio`` per layer name or per ``conv``/``fc``.
    clusters : mapping
        ``class_num`` per layer name or per ``conv``/``fc``.
    init : {"linear", "random", "density", "optimal"}
        How to start k-means; ``optimal`` solves 1-D k-means exactly instead.
    seed : int
        Seed for the ``random`` initialization.
    empty : {"drop", "relocate"}
        What Lloyd does with a cluster that empties (see :func:`cmpstore.compression.kmeans.lloyd`).
    progress : callable, optional
        Called as ``progress(layer_name, detail)`` after each layer.

    Returns
    -------
    model : Model
        A new model; the input is not modified.
    outcomes : list of LayerOutcome
        One per layer touched.
    """
    if not isinstance(model, Model):
        raise UsageError(f"expected a cmpstore Model, got {type(model).__name__}")
    model.check()
    ratios = settings.checked(ratios, settings.checked_ratio, option("ratios"))
    clusters = settings.checked(clusters, settings.checked_clusters, option("clusters"))
    seed = settings.checked_seed(seed, option("seed"))
    if init not in kmeans.INITIALIZATIONS:
        raise UsageError(f"unknown k-means initialization {init!r}; use {', '.join(kmeans.INITIALIZATIONS)}")
    if empty not in kmeans.EMPTY_CLUSTER_POLICIES:
        raise UsageError(f"unknown empty-cluster policy {empty!r}; use {', '.join(kmeans.EMPTY_CLUSTER_POLICIES)}")
    check_names(ratios, model.layers, option("ratios"))
    check_names(clusters, model.layers, option("clusters"))
    payloads = []
    outcomes = []
    for payload in model.payloads:
        address = payload.address
        layer = model.layer_at[(address.layer_field, address.layer_index)]
        ratio = setting_for(ratios, layer)
        cluster_count = setting_for(clusters, layer)
        if address.blob_index != 0 or not layer.kind or (ratio is None and cluster_count is None):
            payloads.append(payload)
            continue
        values, outcome = _compress_blob(payload.values, layer, ratio, cluster_count, init, seed, empty)
        payloads.append(Payload(address, values))
        outcomes.append(outcome)
        progress(layer.name, f"kept {outcome.kept:,} of {outcome.weights:,}, {outcome.centroids or '-'} centroids")
    return Model(model.skeleton, payloads, model.source_format), outcomes


@dataclass
class SharedWeights:
    """One weight blob after pruning and (optionally) weight sharing."""

    weights: np.ndarray  # same shape and dtype as the input
    mask: np.ndarray  # bool, True where a weight survives pruning
    clustering: kmeans.Clustering | None  # over weights[mask], in that order; None if not shared


def prune_and_share(
    values: np.ndarray,
    ratio: float | None,
    cluster_count: int | None,
    init: str = "linear",
    seed: int = 0,
    empty: str = "drop",
    where: str | None = None,
) -> SharedWeights:
    """Prune ``values`` at ``ratio``, then share the survivors' values among ``cluster_count`` centroids.

    The fork's semantics (see :mod:`cmpstore.compression.prune` and :mod:`cmpstore.compression.kmeans`);
    ``ratio`` None prunes only the weights that are already zero, and
    ``cluster_count`` None skips weight sharing.  ``where`` names the blob in errors.

    Raises ModelError if a weight is NaN or infinite: it has no magnitude to
    rank and no place among the centroids, and would turn every survivor NaN.
    """
    _check_finite(values, where)
    weights, mask = prune(values, ratio if ratio is not None else 0.0)
    if cluster_count is None or not mask.any():
        return SharedWeights(weights, mask, None)
    kept = weights[mask]
    clustering = kmeans.already_shared(kept, cluster_count) or _cluster(kept, cluster_count, init, seed, empty, where)
    weights[mask] = clustering.quantized(values.dtype)
    return SharedWeights(weights, mask, clustering)


def _check_finite(values: np.ndarray, where: str | None) -> None:
    finite = np.isfinite(values)
    if finite.all():
        return
    nan = int(np.count_nonzero(np.isnan(values)))
    infinite = values.size - int(np.count_nonzero(finite)) - nan
    kinds = " and ".join(f"{count:,} {kind}" for count, kind in ((nan, "NaN"), (infinite, "infinite")) if count)
    noun = "weight" if nan + infinite == 1 else "weights"
    raise ModelError(f"holds {kinds} {noun}; prune and quantize need finite weights", where=where)


def _cluster(kept, cluster_count, init, seed, empty, where) -> kmeans.Clustering:
    if init == "optimal":
        pointers = kept.size * min(cluster_count, kept.size)
        if pointers > kmeans.MAX_OPTIMAL_POINTERS:
            raise UsageError(
                f"exact k-means here needs {pointers:,} back pointers ({8 * pointers / 2**30:.1f} GiB); "
                f"use {option('init')} 'linear' or 'density' for this layer",
                where=where,
            )
        return kmeans.optimal(kept, cluster_count)
    return kmeans.lloyd(kept, kmeans.initial_centroids(kept, cluster_count, init, seed), empty=empty)


def _compress_blob(values, layer, ratio, cluster_count, init, seed, empty):
    shared = prune_and_share(values, ratio, cluster_count, init, seed, empty, where=f"{layer.label} blob 0")
    outcome = LayerOutcome(layer.name, layer.type, values.size, int(shared.mask.sum()), ratio=ratio)
    if shared.clustering is None:
        return shared.weights, outcome
    kept = values[shared.mask].astype(np.float64)
    outcome.clusters = cluster_count
    outcome.centroids = int(shared.clustering.centroids.size)
    outcome.init = init
    outcome.iterations = shared.clustering.iterations
    outcome.mse = float(np.mean((kept - shared.weights[shared.mask].astype(np.float64)) ** 2))
    return shared.weights, outcome


def settings_from_prototxt(net) -> tuple[dict[str, float], dict[str, int]]:
    """``sparse_ratio`` and ``class_num`` per layer from a net's Cmp layer fields.

    A layer contributes a ratio when it sets ``sparse_ratio`` and a cluster
    count when ``quantize_term`` is true (then ``class_num``, whose default is
    256 for convolution and 32 for inner product, as in the fork).
    """
    ratios: dict[str, float] = {}
    clusters: dict[str, int] = {}
    for layer in net.layer:
        if layer.type in netproto.CONV_TYPES:
            params = layer.convolution_param
        elif layer.type in netproto.FC_TYPES:
            params = layer.inner_product_param
        else:
            continue
        if params.HasField("sparse_ratio"):
            ratios[layer.name] = params.sparse_ratio
        if params.quantize_term:
            clusters[layer.name] = params.class_num
    return ratios, clusters

"""Pruning masks and cluster assignments held fixed while a stock Caffe finetunes.

This is the ``stock`` backend's replacement for the fork's Cmp layers: the
same prune and k-means rules (:mod:`cmpstore.compression.prune`, :mod:`cmpstore.compression.kmeans`),
applied in numpy to the weights once per stage, and the same gradient rule
(:mod:`cmpstore.compression.gradients`) applied to the weight diffs after every backward
pass, before the solver's update.  Why that is enough to keep the structure
exact through the whole stage: a pruned weight's diff is zero, so weight
decay (which adds ``decay * weight = 0``) and momentum (whose history starts
at zero in every stage's new solver) never move it; and all weights of one
cluster start equal and receive the same diff, so every update treats them
alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..compression.transform import prune_and_share


@dataclass
class LayerConstraint:
    """One layer's survivors and, once quantized, each survivor's cluster.

    :meth:`share` runs after every backward pass, so what it needs is worked
    out once here: the flat positions of the survivors, their clusters and
    each cluster's size.  Each iteration then gathers only the survivors'
    diffs, which on a layer pruned to 9 % is a tenth of the layer, instead
    of masking and indexing the whole of it several times
    (:func:`cmpstore.compression.gradients.share_gradients`, which gives the
    same values, is the reference the tests hold this to).
    """

    name: str
    mask: np.ndarray  # bool, the weight blob's shape; True where a weight survives
    labels: np.ndarray | None = None  # int, same shape; cluster index where mask is True
    _survivors: np.ndarray = field(init=False, repr=False)
    _survivor_labels: np.ndarray | None = field(init=False, repr=False, default=None)
    _cluster_sizes: np.ndarray | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self._survivors = np.flatnonzero(self.mask)
        if self.labels is not None:
            self._survivor_labels = self.labels.reshape(-1)[self._survivors].astype(np.intp)
            sizes = np.bincount(self._survivor_labels) if self._survivors.size else np.zeros(0)
            self._cluster_sizes = np.maximum(sizes, 1).astype(np.float64)

    def share(self, diff: np.ndarray) -> None:
        """Mask (and share, by cluster mean as the fork does) a weight diff in place."""
        flat = diff.reshape(-1)  # a view: Caffe's diff blob is contiguous
        kept = flat[self._survivors]
        if self._survivor_labels is not None and kept.size:
            totals = np.bincount(self._survivor_labels, weights=kept, minlength=self._cluster_sizes.size)
            kept = (totals / self._cluster_sizes).astype(diff.dtype)[self._survivor_labels]
        flat.fill(0)
        flat[self._survivors] = kept


def constrain(name: str, weights: np.ndarray, ratio: float | None, clusters: int | None) -> LayerConstraint:
    """Prune ``weights`` in place at ``ratio``; if ``clusters``, weight-share the survivors too.

    ``ratio`` None keeps every nonzero weight (a layer that is shared but not pruned).

    k-means starts as the fork does (``linear`` between the smallest and
    largest survivor) and drops clusters that empty.
    """
    shared = prune_and_share(weights, ratio, clusters, where=f"layer '{name}' blob 0")
    labels = None
    if shared.clustering is not None:
        labels = np.zeros(weights.shape, dtype=np.int32)
        labels[shared.mask] = shared.clustering.labels
    constraint = LayerConstraint(name, shared.mask, labels)
    weights[...] = shared.weights
    return constraint


@dataclass(frozen=True)
class LayerStructure:
    """What a layer's weights look like now: how sparse, how many distinct values survive."""

    name: str
    weights: int
    zeros: int
    distinct_nonzero: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0


def structure(name: str, weights: np.ndarray) -> LayerStructure:
    nonzero = weights[weights != 0]
    return LayerStructure(name, weights.size, weights.size - nonzero.size, int(np.unique(nonzero).size))

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

from dataclasses import dataclass

import numpy as np

from ..compression.gradients import share_gradients
from ..compression.transform import prune_and_share


@dataclass
class LayerConstraint:
    """One layer's survivors and, once quantized, each survivor's cluster."""

    name: str
    mask: np.ndarray  # bool, the weight blob's shape; True where a weight survives
    labels: np.ndarray | None = None  # int, same shape; cluster index where mask is True

    def share(self, diff: np.ndarray) -> None:
        """Mask (and share, by cluster mean as the fork does) a weight diff in place."""
        diff[...] = share_gradients(diff, self.mask, self.labels, reduce="mean")


def constrain(name: str, weights: np.ndarray, ratio: float | None, clusters: int | None) -> LayerConstraint:
    """Prune ``weights`` in place at ``ratio``; if ``clusters``, weight-share the survivors too.

    ``ratio`` None keeps every nonzero weight (a layer that is shared but not pruned).

    k-means starts as the fork does (``linear`` between the smallest and
    largest survivor) and drops clusters that empty.
    """
    shared = prune_and_share(weights, ratio, clusters, where=f"layer '{name}' blob 0")
    constraint = LayerConstraint(name, shared.mask)
    if shared.clustering is not None:
        constraint.labels = np.zeros(weights.shape, dtype=np.int32)
        constraint.labels[shared.mask] = shared.clustering.labels
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

"""Gradient sharing for finetuning a pruned, weight-shared layer (Deep Compression, eq. 3).

What the fork's CmpConvolution/CmpInnerProduct layers do in backward: the
gradient of a pruned weight is zeroed (so it stays pruned), and every
surviving weight of a quantized layer receives the gradient of its whole
cluster, so all weights of a cluster move together and stay equal.  The fork
uses the cluster's mean gradient; the paper sums them.
"""

from __future__ import annotations

import numpy as np

REDUCTIONS = ("mean", "sum")


def share_gradients(
    gradient: np.ndarray,
    mask: np.ndarray,
    labels: np.ndarray | None = None,
    reduce: str = "mean",
) -> np.ndarray:
    """The gradient a pruned (and quantized) layer applies.

    Parameters
    ----------
    gradient : ndarray
        The layer's weight gradient, any shape.
    mask : ndarray of bool
        Same shape; True where the weight survives pruning.
    labels : ndarray of int, optional
        Same shape; the cluster of each surviving weight (ignored where
        ``mask`` is False).  None for a layer that is only pruned.
    reduce : {"mean", "sum"}
        Share the cluster's mean gradient (the fork) or its sum (the paper).

    Returns
    -------
    ndarray
        Same shape and dtype as ``gradient``.

    Examples
    --------
    >>> g = np.array([1.0, 2.0, 3.0, 4.0])
    >>> share_gradients(g, np.array([True, True, False, True]), np.array([0, 1, 0, 0])).tolist()
    [2.5, 2.0, 0.0, 2.5]
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    shared = np.where(mask, gradient, np.zeros((), dtype=gradient.dtype))
    if labels is None:
        return shared
    kept_labels = labels[mask]
    if kept_labels.size == 0:
        return shared
    clusters = int(kept_labels.max()) + 1
    totals = np.bincount(kept_labels, weights=gradient[mask].astype(np.float64), minlength=clusters)
    if reduce == "mean":
        totals /= np.maximum(np.bincount(kept_labels, minlength=clusters), 1)
    shared[mask] = totals[kept_labels].astype(gradient.dtype)
    return shared

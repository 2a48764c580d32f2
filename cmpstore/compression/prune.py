"""Magnitude pruning with the ``sparse_ratio`` semantics of the DeepCompression-caffe fork.

The fork's CmpConvolution/CmpInnerProduct layers sort the absolute weights,
take the threshold at index ``int(count * sparse_ratio) - 1`` and keep the
weights whose magnitude is strictly greater.  Consequences worth knowing:

* Ties: every weight whose magnitude equals the threshold is pruned, so with
  repeated magnitudes more than ``int(count * ratio)`` weights can go.
* ``count * ratio`` is computed in float32, as the fork's C++ does
  (``int * float``); e.g. 400,000 x 0.9 gives 360,000, not 359,999.
* Ratio 0 keeps exactly the nonzero weights (already-pruned weights stay pruned).
"""

from __future__ import annotations

import numpy as np


def pruned_count(count: int, ratio: float) -> int:
    """How many of ``count`` distinct magnitudes the fork prunes at ``ratio`` (float32 arithmetic)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"sparse ratio must be in [0, 1), got {ratio}")
    return int(np.float32(count) * np.float32(ratio))


def prune(weights: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Zero the smallest-magnitude weights; return ``(pruned_weights, mask)``.

    Parameters
    ----------
    weights : ndarray
        A layer's weights, any shape.
    ratio : float
        ``sparse_ratio`` in [0, 1): the fraction of weights to prune.

    Returns
    -------
    pruned_weights : ndarray
        Same shape and dtype, with pruned weights set to ``+0.0``.
    mask : ndarray of bool
        True where a weight survives.

    Examples
    --------
    >>> w = np.array([0.5, -0.1, 0.2, -0.4], dtype=np.float32)
    >>> pruned, mask = prune(w, 0.5)
    >>> pruned.tolist(), mask.tolist()
    ([0.5, 0.0, 0.0, -0.4000000059604645], [True, False, False, True])
    """
    magnitudes = np.abs(weights)
    cut = pruned_count(weights.size, ratio)
    if cut == 0:
        mask = magnitudes > 0
    else:
        threshold = np.partition(magnitudes.reshape(-1), cut - 1)[cut - 1]
        mask = magnitudes > threshold
    return np.where(mask, weights, np.zeros((), dtype=weights.dtype)), mask

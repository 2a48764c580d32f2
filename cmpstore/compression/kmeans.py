"""One-dimensional k-means for weight sharing (Deep Compression, sec. 3).

All methods work on the sorted values, so a Lloyd iteration costs
O(k log n) instead of the O(n k) of a distance matrix: with sorted
centroids every cluster is a contiguous run of the sorted values, its
borders are the midpoints between neighbouring centroids (found by
``searchsorted``), and its sum comes from prefix sums.

Semantics
---------
* Assignment goes to the nearest centroid; a value exactly halfway between
  two goes to the lower one (the first minimum, as the fork's loop finds it).
* Lloyd stops when no assignment changes or no centroid moves by more than
  a relative 1e-5 (see :func:`lloyd` for why), or after ``max_iterations``.
* Empty clusters: the DeepCompression-caffe fork divides by the cluster size,
  so an empty cluster's centroid becomes NaN and it never wins again.  Here an
  empty cluster is dropped the same way, without the NaN: it takes no further
  part, and the result lists only the centroids that are in use.
* Arithmetic is float64; centroids are rounded to the weights' dtype when
  they are written back.
* Values that already take at most ``k`` distinct values are their own
  clusters (:func:`already_shared`): sharing shared weights again changes
  nothing, which Lloyd from a linear start would not promise.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

_WORKERS = max(1, min(8, os.cpu_count() or 1))
_PARALLEL_ABOVE = 1 << 20

INITIALIZATIONS = ("linear", "random", "density", "optimal")
EMPTY_CLUSTER_POLICIES = ("drop", "relocate")
#: optimal() keeps k x n int64 back pointers; above this it would need over 2 GiB.
MAX_OPTIMAL_POINTERS = 1 << 28


@dataclass
class Clustering:
    """The outcome of clustering ``n`` values into at most ``k`` clusters."""

    centroids: np.ndarray  # float64, ascending, only clusters in use
    labels: np.ndarray  # index into centroids, one per value, in the input order
    iterations: int | None  # None for the exact solver
    converged: bool

    def quantized(self, dtype) -> np.ndarray:
        return self.centroids.astype(dtype)[self.labels]

    def inertia(self, values: np.ndarray) -> float:
        """Sum of squared distances of the values to their centroids."""
        return float(np.sum((values.astype(np.float64) - self.centroids[self.labels]) ** 2))


def already_shared(values: np.ndarray, clusters: int) -> Clustering | None:
    """Each distinct value as its own cluster, if there are at most ``clusters`` of them; else None.

    Examples
    --------
    >>> already_shared(np.array([0.5, -0.25, 0.5]), 4).labels.tolist()
    [1, 0, 1]
    >>> already_shared(np.array([0.5, -0.25, 0.5]), 1) is None
    True
    """
    values = _as_float(values)
    distinct = np.unique(values)
    if distinct.size > clusters:
        return None
    return Clustering(distinct.astype(np.float64), np.searchsorted(distinct, values), 0, True)


def initial_centroids(values: np.ndarray, clusters: int, method: str, seed: int = 0) -> np.ndarray:
    """Starting centroids, ascending (float64).

    ``linear`` spaces them evenly between the smallest and largest value (the
    paper's and the fork's choice); ``random`` picks distinct values at random
    (Forgy); ``density`` spaces them evenly along the values' CDF, so dense
    regions get more centroids.
    """
    values = np.asarray(values, dtype=np.float64)
    if method == "linear":
        low, high = values.min(), values.max()
        if clusters == 1:
            return np.array([low])
        # The fork's formula; the clip keeps rounding from putting the last one past the maximum.
        return np.minimum(low + (high - low) * np.arange(clusters) / (clusters - 1), high)
    if method == "random":
        rng = np.random.default_rng(seed)
        distinct = np.unique(values)
        return np.sort(rng.choice(distinct, size=min(clusters, distinct.size), replace=False))
    if method == "density":
        return np.unique(np.quantile(values, np.linspace(0.0, 1.0, clusters)))
    raise ValueError(f"unknown initialization {method!r}; choose from {', '.join(INITIALIZATIONS[:3])}")


def lloyd(
    values: np.ndarray,
    centroids: np.ndarray,
    max_iterations: int = 10_000,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    empty: str = "drop",
    shift_tol: float | None = None,
) -> Clustering:
    """Lloyd iterations from ``centroids``.

    Stops when no assignment changes, or earlier when no centroid moves by
    more than ``atol + rtol * |centroid|`` in an update (numpy's ``allclose``
    rule and defaults).  Why the tolerance: in the long tail of a run, single
    weights hop between neighbouring clusters for dozens of iterations while
    centroids move by under a millionth; the reference LeNet of
    ../shared/models (and numpy-based Deep Compression scripts) stop there,
    and this rule reproduces it.  Pass ``rtol=atol=0`` to run until the
    assignments stop changing.  The result holds the assignment and the mean
    of each cluster under it.

    ``empty`` says what happens to a cluster that loses all its values:
    ``"drop"`` removes it for good (the fork's behaviour, whose division by
    zero turns it into a NaN that never wins again); ``"relocate"`` moves it
    onto the value farthest from its centroid, as scikit-learn does, which
    uses every cluster and gives a lower error.

    ``shift_tol`` switches to scikit-learn's stopping rule instead: stop when
    the squared centroid shifts of an update sum to at most ``shift_tol``
    times the variance of the values (scikit-learn's ``tol``, default 1e-4).

    Examples
    --------
    >>> result = lloyd(np.array([0.0, 0.1, 0.9, 1.0]), np.array([0.0, 1.0]))
    >>> result.centroids.tolist(), result.labels.tolist()
    ([0.05, 0.95], [0, 0, 1, 1])
    """
    if empty not in EMPTY_CLUSTER_POLICIES:
        raise ValueError(f"empty must be one of {EMPTY_CLUSTER_POLICIES}, got {empty!r}")
    values = _as_float(values)
    runs = _SortedRuns(values, _WORKERS if values.size >= _PARALLEL_ABOVE else 1)
    centroids = np.sort(np.asarray(centroids, dtype=np.float64))
    borders = runs.borders(centroids)
    if shift_tol is not None:
        shift_limit = shift_tol * runs.variance()
    iterations = 0
    converged = False
    while iterations < max_iterations:
        iterations += 1
        sizes, sums = runs.sizes_and_sums(borders)
        in_use = sizes > 0
        if empty == "relocate" and not in_use.all():
            # As scikit-learn does: the farthest values become the empty clusters' centroids
            # and leave the clusters they were in.
            far_values, far_clusters = runs.farthest(borders, centroids, int((~in_use).sum()))
            np.subtract.at(sums, far_clusters, far_values)
            np.subtract.at(sizes, far_clusters, 1)
            keep = sizes > 0
            centroids = np.unique(np.concatenate([sums[keep] / sizes[keep], far_values]))
            borders = runs.borders(centroids)
            continue
        means = sums[in_use] / sizes[in_use]
        shifts = means - centroids[in_use]
        if shift_tol is None:
            moved = np.abs(shifts) > atol + rtol * np.abs(centroids[in_use])
        else:
            moved = np.array([float(np.dot(shifts, shifts)) > shift_limit])
        # Empty clusters drop out for good (the fork's division by zero, without the NaN).
        borders = borders[:, np.concatenate([[True], in_use])]
        centroids = means
        if not moved.any():
            converged = True
            break
        new_borders = runs.borders(centroids)
        if np.array_equal(new_borders, borders):
            converged = True
            break
        borders = new_borders
    return _clustering(values, runs, borders, iterations, converged)


class _SortedRuns:
    """The values as a few sorted runs with their prefix sums: all that Lloyd asks of the data.

    Sorting dominates the cost of 1-D k-means; a run per core is sorted in
    parallel (numpy releases the GIL), and a cluster is then one contiguous
    slice of every run, ``runs[r][borders[r, k]:borders[r, k + 1]]``.
    """

    def __init__(self, values: np.ndarray, parts: int):
        chunks = np.array_split(values, parts)
        if parts == 1:
            self.runs = [np.sort(chunks[0])]
            self.prefixes = [_prefix_sums(self.runs[0])]
        else:
            with ThreadPoolExecutor(parts) as pool:
                self.runs = list(pool.map(np.sort, chunks))
                self.prefixes = list(pool.map(_prefix_sums, self.runs))
        self.size = values.size
        self.low = min(run[0] for run in self.runs if run.size)
        self.high = max(run[-1] for run in self.runs if run.size)

    def variance(self) -> float:
        mean = sum(prefix[-1] for prefix in self.prefixes) / self.size
        squares = sum(float(np.einsum("i,i->", run, run, dtype=np.float64)) for run in self.runs)
        return squares / self.size - mean * mean

    def borders(self, centroids: np.ndarray) -> np.ndarray:
        """Cluster k of run r is runs[r][borders[r, k]:borders[r, k+1]]; ties at a midpoint go down."""
        midpoints = (centroids[:-1] + centroids[1:]) / 2
        if self.runs[0].dtype == np.float32:
            # v <= m  <=>  v <= the largest float32 not above m, for any float32 v.
            rounded = midpoints.astype(np.float32)
            midpoints = np.where(rounded > midpoints, np.nextafter(rounded, np.float32(-np.inf)), rounded)
        return np.array(
            [np.concatenate([[0], np.searchsorted(run, midpoints, side="right"), [run.size]]) for run in self.runs]
        )

    def sizes_and_sums(self, borders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sizes = np.diff(borders, axis=1).sum(axis=0)
        sums = sum(prefix[row[1:]] - prefix[row[:-1]] for prefix, row in zip(self.prefixes, borders, strict=True))
        return sizes, sums

    def largest(self, borders: np.ndarray) -> np.ndarray:
        """The largest value of each cluster (-inf for an empty one)."""
        largest = np.full(borders.shape[1] - 1, -np.inf)
        for run, row in zip(self.runs, borders, strict=True):
            present = row[1:] > row[:-1]
            largest[present] = np.maximum(largest[present], run[row[1:][present] - 1])
        return largest

    def farthest(self, borders: np.ndarray, centroids: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``count`` distinct values farthest from their clusters' centroids, and those clusters.

        A cluster's j-th farthest value is among the j outermost values at
        either end of its slice of some run: only those are examined.
        """
        found_values, found_clusters = [], []
        for run, row in zip(self.runs, borders, strict=True):
            starts, ends = row[:-1], row[1:]
            reach = np.minimum(ends - starts, count)
            ends_of_slices = [np.arange(s, s + r) for s, r in zip(starts, reach, strict=True)]
            ends_of_slices += [np.arange(e - r, e) for e, r in zip(ends, reach, strict=True)]
            positions = np.unique(np.concatenate(ends_of_slices).astype(np.int64))
            found_values.append(run[positions])
            found_clusters.append(np.searchsorted(row, positions, side="right") - 1)
        candidates = np.concatenate(found_values).astype(np.float64)
        clusters = np.concatenate(found_clusters)
        by_distance = np.argsort(-np.abs(candidates - centroids[clusters]), kind="stable")
        # Equal values would make equal centroids: take each value once.
        _, first = np.unique(candidates[by_distance], return_index=True)
        chosen = by_distance[np.sort(first)[:count]]
        return candidates[chosen], clusters[chosen]


def _prefix_sums(run: np.ndarray) -> np.ndarray:
    prefix = np.empty(run.size + 1)
    prefix[0] = 0.0
    prefix[1:] = run
    return np.cumsum(prefix, out=prefix)


def _as_float(values) -> np.ndarray:
    """Flat float32 stays float32 (exact and half the memory); anything else becomes float64."""
    values = np.asarray(values).reshape(-1)
    return values if values.dtype == np.float32 else values.astype(np.float64)


def optimal(values: np.ndarray, clusters: int) -> Clustering:
    """Exactly optimal 1-D k-means (least sum of squares), by dynamic programming.

    The Ckmeans.1d.dp recurrence ``D[q][i] = min_j D[q-1][j-1] + SSE(j..i)``,
    solved row by row with divide and conquer over the monotone argmin:
    O(k n log n) time and O(k n) memory for the back pointers.
    """
    values = _as_float(values)
    runs = _SortedRuns(values, 1)
    sorted_values = runs.runs[0].astype(np.float64)
    n = sorted_values.size
    clusters = min(clusters, np.unique(sorted_values).size)
    first = runs.prefixes[0]
    second = _prefix_sums(sorted_values**2)

    def sse(start, end):  # values start..end-1, vectorised
        count = end - start
        total = first[end] - first[start]
        return np.maximum(second[end] - second[start] - total * total / count, 0.0)

    # cost[i]: best cost of the first i values in q clusters; starts[q][i]: where the last cluster begins.
    ends = np.arange(1, n + 1)
    cost = sse(np.zeros(n, dtype=np.int64), ends)
    starts = np.zeros((clusters, n), dtype=np.int64)
    for q in range(1, clusters):
        previous = np.concatenate([[np.inf], cost])  # previous[j]: first j values in q clusters
        cost, starts[q] = _row(previous, sse, n, q)
    borders = [n]
    end = n
    for q in range(clusters - 1, -1, -1):
        start = int(starts[q][end - 1]) if q else 0
        borders.append(start)
        end = start
    return _clustering(values, runs, np.array([borders[::-1]], dtype=np.int64), None, True)


def _row(previous, sse, n, q):
    """One DP row by level-wise divide and conquer: the argmin start is monotone in the end."""
    best_cost = np.full(n, np.inf)
    best_start = np.zeros(n, dtype=np.int64)
    # Each pending task: an end range [low, high] (ends are exclusive indices i+1) and a start range.
    low = np.array([q + 1])
    high = np.array([n])
    start_low = np.array([q])
    start_high = np.array([n - 1])
    while low.size:
        middle = (low + high) // 2
        span = np.minimum(start_high, middle - 1) - start_low + 1
        task = np.repeat(np.arange(middle.size), span)
        offsets = np.arange(task.size) - np.repeat(np.cumsum(span) - span, span)
        candidates = start_low[task] + offsets
        totals = previous[candidates] + sse(candidates, middle[task])
        segment_starts = np.cumsum(span) - span
        minima = np.minimum.reduceat(totals, segment_starts)
        is_min = totals == minima[task]
        first_min = np.maximum.reduceat(np.where(is_min, -np.arange(task.size), -task.size), segment_starts)
        chosen = candidates[-first_min]
        best_cost[middle - 1] = minima
        best_start[middle - 1] = chosen
        left = low <= middle - 1
        right = middle + 1 <= high
        low, high, start_low, start_high = (
            np.concatenate([low[left], middle[right] + 1]),
            np.concatenate([middle[left] - 1, high[right]]),
            np.concatenate([start_low[left], chosen[right]]),
            np.concatenate([chosen[left], start_high[right]]),
        )
    return best_cost, best_start


def _clustering(values, runs: _SortedRuns, borders, iterations, converged) -> Clustering:
    """Centroids (cluster means) and labels in input order for the assignment ``borders``."""
    sizes, sums = runs.sizes_and_sums(borders)
    in_use = sizes > 0
    # Equal values never straddle a border, so a value's cluster is the number of clusters
    # whose largest value is below it.
    largest = runs.largest(borders)[in_use][:-1]
    labels = _count_below(largest, values, runs.low, runs.high)
    return Clustering(sums[in_use] / sizes[in_use], labels, iterations, converged)


def _count_below(thresholds: np.ndarray, values: np.ndarray, low: float, high: float) -> np.ndarray:
    """``searchsorted(thresholds, values, "left")`` for many values, through a lookup grid.

    A binary search per value costs ~60 ns; instead each value is mapped to a
    bin of a fine grid by a monotone function ``bin(v)`` (computed in the
    values' own precision, in which the thresholds are exact).  A threshold
    ``t`` is below ``v`` if ``bin(t) < bin(v)``; only thresholds sharing
    ``v``'s bin need comparing, a few at most.
    """
    values = np.asarray(values)
    if values.dtype != np.float32:
        values = values.astype(np.float64)
    dtype = values.dtype.type
    bins = 64 * (thresholds.size + 1)
    low, scale = dtype(low), dtype(bins / (high - low) if high > low else 0.0)

    offset = dtype(low * scale)

    def bin_of(x):
        # x * scale - offset is monotone in x under rounding, which is all the grid needs.
        scaled = np.multiply(x, scale)
        np.subtract(scaled, offset, out=scaled)
        found = scaled.astype(np.int32)
        np.clip(found, 0, bins - 1, out=found)
        return found

    thresholds = thresholds.astype(dtype)
    threshold_bins = bin_of(thresholds)
    per_bin = np.bincount(threshold_bins, minlength=bins)
    crowded = int(per_bin.max(initial=0))
    if crowded > 8:  # thresholds bunched in a few bins: the grid would not pay off
        return np.searchsorted(thresholds, values, side="left")
    below = np.concatenate([[0], np.cumsum(per_bin)[:-1]]).astype(np.int32)
    rank = np.arange(thresholds.size) - below[threshold_bins]

    def count(chunk):
        value_bins = bin_of(chunk)
        labels = below[value_bins]
        for slot in slots:
            labels += slot[value_bins] < chunk
        return labels

    slots = []
    for column in range(crowded):
        slot = np.full(bins, np.inf, dtype=dtype)
        in_column = rank == column
        slot[threshold_bins[in_column]] = thresholds[in_column]
        slots.append(slot)
    if values.size < _PARALLEL_ABOVE:
        return count(values)
    # numpy releases the GIL in these loops, so chunks run on all cores.
    chunks = np.array_split(values, _WORKERS)
    with ThreadPoolExecutor(_WORKERS) as pool:
        return np.concatenate(list(pool.map(count, chunks)))

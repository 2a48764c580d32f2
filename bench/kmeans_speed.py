#!/usr/bin/env python3
"""1-D k-means: cmpstore's sorted Lloyd against scikit-learn's KMeans, same start, one run.

    python bench/kmeans_speed.py [--weights 10000000] [--clusters 256]

The weights look like a pruned layer's survivors (Gaussian, the 60 % of
smallest magnitude removed), float32 as in a caffemodel, given to both as
they are.  Both start from the same linear initial centroids with n_init=1;
every run is timed best of ``--repeat``; the script prints times, iteration
counts and inertias side by side, and the speed-ups.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from cmpstore.compression import kmeans  # noqa: E402


def survivors(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.normal(0.0, 0.02, size=int(count / 0.4) + 1000).astype(np.float32)
    threshold = np.quantile(np.abs(values), 0.6)
    return values[np.abs(values) > threshold][:count]


def best_of(repeat: int, run):
    best, result = float("inf"), None
    for _ in range(repeat):
        began = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - began)
    return best, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=int, default=10_000_000)
    parser.add_argument("--clusters", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3, help="time each run best of this many")
    args = parser.parse_args()
    from sklearn.cluster import KMeans

    values = survivors(args.weights)
    start = kmeans.initial_centroids(values, args.clusters, "linear")
    print(f"{values.size:,} weights, {args.clusters} clusters, linear initialisation")

    # Like for like: sklearn relocates clusters that empty out (linear starts put centroids in the
    # gap that pruning left) and stops when the squared centroid shifts sum to <= tol x variance;
    # the first run uses the same two rules.  The others show cmpstore's own defaults.
    runs = []
    for name, options in (
        ("cmpstore, sklearn's rules (relocate, tol 1e-4)", {"empty": "relocate", "shift_tol": 1e-4}),
        ("cmpstore relocate, rtol 1e-5", {"empty": "relocate"}),
        ("cmpstore default: drop (the fork), rtol 1e-5", {}),
    ):
        seconds, result = best_of(args.repeat, lambda options=options: kmeans.lloyd(values, start, **options))
        runs.append((name, seconds, result))

    data = values.reshape(-1, 1)

    def fit_sklearn():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "explicit initial center position passed"
            return KMeans(args.clusters, init=start.reshape(-1, 1), n_init=1, algorithm="lloyd").fit(data)

    sklearn_time, reference = best_of(args.repeat, fit_sklearn)

    # sklearn's inertia_ is summed in float32 for float32 data; recompute it in float64 like ours.
    centers = reference.cluster_centers_[reference.labels_, 0].astype(np.float64)
    sklearn_inertia = float(np.sum((values.astype(np.float64) - centers) ** 2))
    rows = [(name, seconds, r.iterations, r.centroids.size, r.inertia(values)) for name, seconds, r in runs]
    rows.append(
        (
            "sklearn KMeans (lloyd, n_init=1)",
            sklearn_time,
            reference.n_iter_,
            np.unique(reference.labels_).size,
            sklearn_inertia,
        )
    )
    print(f"{'':48} {'seconds':>9} {'iterations':>10} {'clusters':>8} {'inertia':>16} {'vs sklearn':>10}")
    for name, seconds, iterations, used, inertia in rows:
        print(f"{name:48} {seconds:9.2f} {iterations:10d} {used:8d} {inertia:16.9e} {sklearn_time / seconds:9.0f}x")
    main_name, main_seconds, main_result = runs[0]
    same = np.array_equal(np.unique(reference.labels_, return_inverse=True)[1], main_result.labels)
    lower = main_result.inertia(values) <= sklearn_inertia
    print(
        f"{main_name}: {sklearn_time / main_seconds:.0f}x faster than sklearn; "
        f"same labels: {same}; inertia <= sklearn's: {lower}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

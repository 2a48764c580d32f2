import numpy as np
import pytest
from common import shared_model
from hypothesis import given, settings
from hypothesis import strategies as st

from cmpstore import api
from cmpstore.compression import kmeans
from cmpstore.compression.prune import prune
from cmpstore.compression.transform import compress_weights, prune_and_share

RATIOS = {"conv1": 0.33, "conv2": 0.8, "fc1": 0.9, "fc2": 0.8}


def brute_force_lloyd(values, centroids, rtol=1e-5, atol=1e-8):
    """The textbook loop with a distance matrix, the reference for the sorted implementation."""
    values = values.astype(np.float64)
    centroids = np.sort(centroids.astype(np.float64))
    while True:
        labels = np.abs(values[:, None] - centroids[None, :]).argmin(axis=1)
        used = np.unique(labels)
        means = np.array([values[labels == k].mean() for k in used])
        if np.all(np.abs(means - centroids[used]) <= atol + rtol * np.abs(centroids[used])):
            return means, np.searchsorted(used, labels)
        new_labels = np.abs(values[:, None] - means[None, :]).argmin(axis=1)
        if np.array_equal(new_labels, np.searchsorted(used, labels)):
            return means, new_labels
        centroids = means


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 400), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_sorted_lloyd_matches_the_distance_matrix_loop(size, clusters, seed):
    values = np.random.default_rng(seed).normal(size=size)
    result = kmeans.lloyd(values, kmeans.initial_centroids(values, clusters, "linear"))
    centroids, labels = brute_force_lloyd(values, kmeans.initial_centroids(values, clusters, "linear"))
    np.testing.assert_array_equal(result.labels, labels)
    np.testing.assert_allclose(result.centroids, centroids, rtol=1e-9, atol=1e-12)
    assert not np.isnan(result.centroids).any()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 120), st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_optimal_is_optimal(size, clusters, seed):
    values = np.round(np.random.default_rng(seed).normal(size=size), 2)
    best = kmeans.optimal(values, clusters)
    for init in ("linear", "density", "random"):
        lloyd = kmeans.lloyd(values, kmeans.initial_centroids(values, clusters, init, seed))
        assert best.inertia(values) <= lloyd.inertia(values) + 1e-9
    assert best.centroids.size <= clusters


def test_optimal_against_exhaustive_search():
    values = np.array([0.0, 0.1, 0.15, 1.0, 1.2, 5.0, 5.5, 9.0])
    best = kmeans.optimal(values, 3)
    from itertools import combinations

    def cost(cuts):
        parts = np.split(values, cuts)
        return sum(((p - p.mean()) ** 2).sum() for p in parts)

    exhaustive = min(cost(list(c)) for c in combinations(range(1, values.size), 2))
    assert best.inertia(values) == pytest.approx(exhaustive)


def test_empty_clusters_do_not_make_nan():
    values = np.array([0.0, 0.0, 1.0, 1.0])
    result = kmeans.lloyd(values, kmeans.initial_centroids(values, 256, "linear"))
    assert result.centroids.tolist() == [0.0, 1.0]
    assert result.labels.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("init", ["linear", "random", "density"])
def test_initializations_are_sorted_and_inside_the_range(init):
    values = np.random.default_rng(3).laplace(size=1000)
    centroids = kmeans.initial_centroids(values, 16, init, seed=1)
    assert np.all(np.diff(centroids) > 0)
    assert values.min() <= centroids[0] and centroids[-1] <= values.max()


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 2000),
    st.floats(0.0, 0.95),
    st.integers(1, 64),
    st.integers(0, 2**32 - 1),
    st.sampled_from(kmeans.INITIALIZATIONS),
)
def test_quantized_layers_keep_the_invariants(size, ratio, clusters, seed, init):
    from cmpstore.synthetic import LayerSpec, build_model

    model = build_model((LayerSpec("fc", "InnerProduct", (1, size)),), seed=seed % 1000)
    quantized, _ = compress_weights(model, {"fc": ratio}, {"fc": clusters}, init=init, seed=seed)
    before = model.payloads[0].values
    after = quantized.payloads[0].values
    _, mask = prune(before, ratio)
    assert not after[~mask].any()  # pruned weights stay zero
    assert np.unique(after[after != 0]).size <= clusters


def test_reproduces_the_reference_quantization():
    dense = api.load_model(shared_model("lenet_iter_10000.caffemodel"))
    reference = api.load_weights(shared_model("lenet_pq_seed_schedule.caffemodel"))
    model, outcomes = compress_weights(dense, RATIOS, {"conv": 256, "fc": 32})
    weights = api.weights_by_layer(model)
    for name in RATIOS:
        np.testing.assert_array_equal(weights[name][0] != 0, reference[name][0] != 0)
        np.testing.assert_allclose(weights[name][0], reference[name][0], rtol=0, atol=1e-5)
    assert all(o.mse is not None and o.mse > 0 for o in outcomes)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 400), st.integers(1, 40), st.integers(0, 2**32 - 1), st.sampled_from(["drop", "relocate"]))
def test_parallel_sorted_runs_give_the_same_result(size, clusters, seed, empty):
    values = np.random.default_rng(seed).normal(size=size).astype(np.float32)
    start = kmeans.initial_centroids(values, clusters, "linear")
    single = kmeans.lloyd(values, start, empty=empty)
    saved = kmeans._WORKERS, kmeans._PARALLEL_ABOVE
    kmeans._WORKERS, kmeans._PARALLEL_ABOVE = 3, 1
    try:
        split = kmeans.lloyd(values, start, empty=empty)
    finally:
        kmeans._WORKERS, kmeans._PARALLEL_ABOVE = saved
    np.testing.assert_array_equal(split.labels, single.labels)
    np.testing.assert_allclose(split.centroids, single.centroids, rtol=1e-12, atol=1e-12)
    assert split.iterations == single.iterations


def test_exact_kmeans_refuses_layers_too_large_for_memory(monkeypatch):
    from cmpstore.errors import UsageError
    from cmpstore.synthetic import LayerSpec, build_model

    monkeypatch.setattr(kmeans, "MAX_OPTIMAL_POINTERS", 1000)
    model = build_model((LayerSpec("fc", "InnerProduct", (10, 500)),), seed=1)
    with pytest.raises(UsageError, match="layer 'fc' blob 0: exact k-means here needs .* use init 'linear'"):
        compress_weights(model, {}, {"fc": 8}, init="optimal")


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-1, 1, width=32, allow_subnormal=False), min_size=1, max_size=400),
    st.integers(1, 40),
    st.sampled_from(["linear", "density", "optimal"]),
)
def test_sharing_shared_weights_again_changes_nothing(values, clusters, init):
    """Quantization is idempotent: a layer already shared (<= k distinct values) comes back as it was."""
    weights = np.array([v for v in values if v != 0] or [0.5], dtype=np.float32)
    once = prune_and_share(weights.copy(), None, clusters, init=init).weights
    twice = prune_and_share(once.copy(), None, clusters, init=init)
    assert np.array_equal(twice.weights.view(np.uint32), once.view(np.uint32))
    assert twice.clustering.iterations == 0


def test_already_shared_only_when_there_are_at_most_k_values():
    values = np.array([0.5, -0.25, 0.5, 0.75], dtype=np.float32)
    assert kmeans.already_shared(values, 2) is None
    shared = kmeans.already_shared(values, 3)
    assert shared.centroids.tolist() == [-0.25, 0.5, 0.75]
    assert shared.labels.tolist() == [1, 0, 1, 2]

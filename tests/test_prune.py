import numpy as np
import pytest
from common import shared_model
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cmpstore import api
from cmpstore.compression.prune import prune, pruned_count

RATIOS = {"conv1": 0.33, "conv2": 0.8, "fc1": 0.9, "fc2": 0.8}


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3000), st.floats(0.0, 0.999), st.integers(0, 2**32 - 1))
def test_distinct_magnitudes_prune_exactly_the_count(size, ratio, seed):
    weights = np.random.default_rng(seed).permutation(np.arange(1, size + 1, dtype=np.float32))
    weights *= np.where(np.arange(size) % 2, 1, -1).astype(np.float32)
    pruned, mask = prune(weights, ratio)
    assert int((~mask).sum()) == pruned_count(size, ratio)
    assert pruned.dtype == weights.dtype and pruned.shape == weights.shape
    np.testing.assert_array_equal(pruned[mask], weights[mask])
    assert not pruned[~mask].any()


@given(arrays(np.float32, st.integers(1, 200), elements=st.sampled_from([0.0, 0.5, -0.5, 1.0, 2.0])))
def test_ties_at_the_threshold_are_all_pruned(weights):
    pruned, mask = prune(weights, 0.5)
    cut = pruned_count(weights.size, 0.5)
    if cut:
        threshold = np.sort(np.abs(weights))[cut - 1]
        assert not mask[np.abs(weights) == threshold].any()
        assert (~mask).sum() >= cut


def test_ratio_zero_keeps_exactly_the_nonzero_weights():
    weights = np.array([0.0, 1.0, -0.0, -2.0], dtype=np.float32)
    _, mask = prune(weights, 0.0)
    assert mask.tolist() == [False, True, False, True]


def test_float32_count_arithmetic_of_the_fork():
    # In float64, 400000 * float32(0.9) truncates to 359999; the fork's float product gives 360000.
    assert pruned_count(400_000, 0.9) == 360_000
    assert pruned_count(500, 0.33) == 165


def test_reproduces_the_reference_masks():
    dense = api.load_weights(shared_model("lenet_iter_10000.caffemodel"))
    reference = api.load_weights(shared_model("lenet_pq_seed_schedule.caffemodel"))
    for name, ratio in RATIOS.items():
        _, mask = prune(dense[name][0], ratio)
        np.testing.assert_array_equal(mask, reference[name][0] != 0)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_invalid_ratios(ratio):
    with pytest.raises(ValueError, match="sparse ratio"):
        prune(np.ones(4, dtype=np.float32), ratio)

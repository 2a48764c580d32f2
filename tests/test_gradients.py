import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmpstore.compression.gradients import share_gradients


def loop_reference(gradient, mask, labels, reduce):
    flat_gradient, flat_mask = gradient.reshape(-1), mask.reshape(-1)
    out = np.zeros_like(flat_gradient)
    if labels is None:
        for i in range(flat_gradient.size):
            out[i] = flat_gradient[i] if flat_mask[i] else 0.0
        return out.reshape(gradient.shape)
    flat_labels = labels.reshape(-1)
    totals, counts = {}, {}
    for i in range(flat_gradient.size):
        if flat_mask[i]:
            totals[flat_labels[i]] = totals.get(flat_labels[i], 0.0) + float(flat_gradient[i])
            counts[flat_labels[i]] = counts.get(flat_labels[i], 0) + 1
    for i in range(flat_gradient.size):
        if flat_mask[i]:
            total = totals[flat_labels[i]]
            out[i] = total / counts[flat_labels[i]] if reduce == "mean" else total
    return out.reshape(gradient.shape)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(1, 6), min_size=1, max_size=4),
    st.integers(1, 10),
    st.sampled_from(["mean", "sum"]),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_matches_a_plain_loop(shape, clusters, reduce, quantized, seed):
    rng = np.random.default_rng(seed)
    gradient = rng.normal(size=shape).astype(np.float32)
    mask = rng.random(shape) < 0.6
    labels = rng.integers(0, clusters, size=shape) if quantized else None
    shared = share_gradients(gradient, mask, labels, reduce)
    assert shared.shape == gradient.shape and shared.dtype == gradient.dtype
    np.testing.assert_allclose(shared, loop_reference(gradient, mask, labels, reduce), rtol=1e-5, atol=1e-6)
    assert not shared[~mask].any()


def test_unknown_reduction():
    with pytest.raises(ValueError, match="reduce"):
        share_gradients(np.ones(2), np.ones(2, bool), np.zeros(2, int), "max")

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cmpstore.streams.relative_index import gap_histogram, gaps_with_fillers, nonzero_gaps, positions_from_gaps


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0, 5000), max_size=300), st.integers(1, 16))
def test_positions_roundtrip_with_fillers(positions, index_bits):
    positions = np.array(sorted(positions), dtype=np.int64)
    gaps, fillers = gaps_with_fillers(positions, index_bits)
    assert gaps.max(initial=1) <= 2**index_bits - 1
    decoded = positions_from_gaps(gaps, 5001)
    is_filler = np.zeros(gaps.size, dtype=bool)
    is_filler[fillers] = True
    np.testing.assert_array_equal(decoded[~is_filler], positions)
    histogram, filler_count = gap_histogram(nonzero_gaps(positions), index_bits)
    assert filler_count == fillers.size
    np.testing.assert_array_equal(histogram[1:], np.bincount(gaps, minlength=2**index_bits)[1:])


def test_paper_figure_2_style_example():
    # 3-bit gaps reach at most 7: a jump of 15 needs two fillers.
    gaps, fillers = gaps_with_fillers(np.array([0, 15]), index_bits=3)
    assert gaps.tolist() == [1, 7, 7, 1]
    assert fillers.tolist() == [1, 2]

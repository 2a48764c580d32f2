"""Relative indexing of a sparse vector, as in Deep Compression (Han et al. 2016, Fig. 2).

Each stored entry records its *gap*: its position minus the previous entry's
position (the first entry's gap is its position plus one).  Gaps are stored
in ``index_bits`` bits, so the longest gap is ``2**index_bits - 1``; a longer
gap is bridged by *filler* entries, each a zero placed the longest gap after
the previous entry.

Examples
--------
>>> gaps, fillers = gaps_with_fillers(np.array([1, 9]), index_bits=2)
>>> gaps.tolist(), fillers.tolist()
([2, 3, 3, 2], [1, 2])
>>> positions_from_gaps(gaps, size=10).tolist()
[1, 4, 7, 9]
"""

from __future__ import annotations

import numpy as np

from ..errors import FormatError


def max_gap(index_bits: int) -> int:
    return (1 << index_bits) - 1


def nonzero_gaps(positions: np.ndarray) -> np.ndarray:
    """Gap of each nonzero to the previous one (positions ascending, first gap = position + 1).

    int32, like the positions: a blob has at most 2**29 values, and the
    encoder's peak memory is a few of these arrays.
    """
    return np.diff(positions.astype(np.int32, copy=False), prepend=np.int32(-1))


def filler_counts(gaps: np.ndarray, index_bits: int) -> np.ndarray:
    """Number of fillers needed before each nonzero."""
    return (gaps - 1) // max_gap(index_bits)


def gap_histogram(gaps: np.ndarray, index_bits: int) -> tuple[np.ndarray, int]:
    """Frequencies of the stored gap symbols (fillers included) and the filler count."""
    longest = max_gap(index_bits)
    fillers = filler_counts(gaps, index_bits)
    last = gaps - fillers * longest
    histogram = np.bincount(last, minlength=longest + 1)
    total_fillers = int(fillers.sum())
    histogram[longest] += total_fillers
    return histogram, total_fillers


def gaps_with_fillers(positions: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Stored gap per entry, and the entry numbers of the fillers.

    Returns
    -------
    gaps : ndarray of uint16
        One gap per stored entry (nonzeros and fillers, in position order).
    filler_entries : ndarray of int64
        Which entries are fillers.
    """
    longest = max_gap(index_bits)
    gaps = nonzero_gaps(positions)
    fillers = filler_counts(gaps, index_bits)
    # Entry number of each nonzero once the fillers before it are inserted.
    nonzero_entries = np.arange(gaps.size, dtype=np.int32) + np.cumsum(fillers, dtype=np.int32)
    entry_count = gaps.size + int(fillers.sum())
    stored = np.full(entry_count, longest, dtype=np.uint16)  # gaps fit: index_bits <= 16
    stored[nonzero_entries] = gaps - fillers * longest
    is_filler = np.ones(entry_count, dtype=bool)
    is_filler[nonzero_entries] = False
    return stored, np.flatnonzero(is_filler)


def positions_from_gaps(gaps: np.ndarray, size: int) -> np.ndarray:
    """Absolute positions of the entries; every gap must be >= 1 and the last inside ``size``."""
    # Widen first, then sum in place: cumsum with a dtype casts element by element, four times slower.
    positions = gaps.astype(np.int64)
    np.cumsum(positions, out=positions)
    positions -= 1
    if gaps.size and (gaps.min() < 1 or positions[-1] >= size):
        raise FormatError(f"relative indices run past the end of a blob of {size} values")
    return positions

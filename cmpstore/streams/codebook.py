"""Weight sharing: a codebook of distinct values and an index into it per weight.

Values are compared by bit pattern, not numerically, so ``-0.0`` and ``0.0``
are distinct entries and every NaN payload survives: the codebook is exact.
The codebook holds only the values in use, ascending by bit pattern.

Examples
--------
>>> codebook, indices = build_codebook(np.array([0.5, -1.0, 0.5], dtype=np.float32))
>>> codebook.tolist(), indices.tolist()
([0.5, -1.0], [0, 1, 0])
>>> lookup(codebook, indices).tolist()
[0.5, -1.0, 0.5]
"""

from __future__ import annotations

import numpy as np

from .varint import Reader, encode_ascending

#: The unsigned integer of each value width: float16 (FP16 raw_data), float32 and float64.
_UNSIGNED = {2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}


def bit_patterns(values: np.ndarray) -> np.ndarray:
    """The values reinterpreted as unsigned integers of the same width."""
    return values.view(_UNSIGNED[values.dtype.itemsize])


def build_codebook(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(codebook, indices)`` with ``codebook[indices]`` bit-identical to ``values``.

    Indices are uint16 when the codebook has at most 65,536 entries, else int32.
    """
    patterns = bit_patterns(values)
    codebook = np.unique(patterns)
    # searchsorted instead of unique's inverse: no argsort of every value, a fraction of the memory.
    indices = np.searchsorted(codebook, patterns).astype(np.uint16 if codebook.size <= 1 << 16 else np.int32)
    return codebook.view(values.dtype), indices


def lookup(codebook: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Values for codebook indices (the inverse of :func:`build_codebook`)."""
    return codebook[indices]


def codebook_bytes(codebook: np.ndarray) -> bytes:
    """Serialize a codebook (ascending bit patterns) as ascending varint gaps (see :mod:`.varint`).

    k-means centroids crowd a few binades, so most gaps fit in 3 bytes, not 4.
    """
    return encode_ascending(int(pattern) for pattern in bit_patterns(codebook).tolist())


def read_codebook(reader: Reader, size: int, dtype: np.dtype, what: str) -> np.ndarray:
    """Read what :func:`codebook_bytes` wrote: ``size`` values of ``dtype``."""
    patterns = reader.ascending(size, 1 << (8 * dtype.itemsize), what)
    return np.array(patterns, dtype=_UNSIGNED[dtype.itemsize]).view(dtype)

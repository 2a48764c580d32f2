"""Raw codec: the values as they are, little-endian.  Best for small blobs such as biases."""

from __future__ import annotations

import numpy as np

from ..errors import FormatError
from .base import BlobCodec, output_for


class RawCodec(BlobCodec):
    """Store values unchanged.

    Examples
    --------
    >>> codec = RawCodec()
    >>> payload = codec.encode(np.array([1.5, -2.0], dtype="<f4"))
    >>> len(payload), codec.decode(payload, 2, np.dtype("<f4"), "blob").tolist()
    (8, [1.5, -2.0])
    """

    codec_id = 0
    name = "raw"

    def encode(self, values: np.ndarray) -> bytes:
        return values.tobytes()

    def decode(self, payload, count: int, dtype: np.dtype, what: str, out: np.ndarray | None = None) -> np.ndarray:
        out = output_for(out, count, dtype)
        if len(payload) != count * dtype.itemsize:
            raise FormatError(f"{what}: raw payload of {len(payload)} bytes, expected {count * dtype.itemsize}")
        values = np.frombuffer(payload, dtype=dtype)
        if out is None:
            return values  # a view of the payload: no copy
        out[...] = values
        return out

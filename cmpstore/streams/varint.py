"""LEB128 varints for the small integers inside container sections.

:class:`Reader` is a bounds-checked cursor over one section's payload: every
read says what it was reading, so a short or malformed section produces a
:class:`~cmpstore.errors.FormatError` that names the field.
"""

from __future__ import annotations

import numpy as np

from ..caffe.wire import encode_varint
from ..errors import FormatError

__all__ = ["Reader", "encode_varint"]

_MAX_VARINT_BYTES = 10


class Reader:
    """Sequential reader over ``buf[pos:end]`` that never reads past ``end``."""

    def __init__(self, buf, pos: int = 0, end: int | None = None):
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def varint(self, what: str, maximum: int) -> int:
        """Read a varint and check ``value <= maximum``."""
        value = 0
        shift = 0
        pos = self.pos
        limit = min(self.end, pos + _MAX_VARINT_BYTES)
        while True:
            if pos >= limit:
                raise FormatError(f"{what}: truncated or overlong varint")
            byte = self.buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        if value > maximum:
            raise FormatError(f"{what} is {value}, more than the allowed {maximum}")
        self.pos = pos
        return value

    def take(self, length: int, what: str) -> memoryview:
        """Return the next ``length`` bytes, checked against what remains."""
        if length > self.remaining:
            raise FormatError(f"{what} needs {length} bytes but only {self.remaining} remain")
        start = self.pos
        self.pos += length
        return memoryview(self.buf)[start : self.pos]

    def array(self, count: int, dtype: np.dtype, what: str) -> np.ndarray:
        """Return the next ``count`` values of ``dtype`` as a read-only view."""
        dtype = np.dtype(dtype)
        if count > self.remaining // dtype.itemsize:
            raise FormatError(
                f"{what} declares {count} values of {dtype.itemsize} bytes but only {self.remaining} bytes remain"
            )
        return np.frombuffer(self.take(count * dtype.itemsize, what), dtype=dtype)

    def expect_end(self, what: str) -> None:
        if self.remaining:
            raise FormatError(f"{what}: {self.remaining} unexpected trailing bytes")

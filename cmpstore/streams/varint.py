"""LEB128 varints, the one home of the integer encoding that the protobuf wire format and .cmps share.

* :func:`encode_varint` / :func:`decode_varint`: one non-negative integer.
* :func:`encode_ascending` / :meth:`Reader.ascending`: a strictly ascending
  list of integers as varint gaps (the first as is, each next one as
  ``value - previous - 1``), as codebooks, Huffman tables and rANS symbol
  lists store theirs.
* :class:`Reader`: a bounds-checked cursor over one section's payload; every
  read says what it was reading, so a short or malformed section produces a
  :class:`~cmpstore.errors.FormatError` that names the field.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..errors import FormatError

#: A 64-bit value needs at most ten 7-bit groups.
MAX_VARINT_BYTES = 10
#: Reader.varints sums varints of at most this many bytes (63 bits) in int64, and reads
#: fewer than _VECTOR_VARINTS one by one (below that numpy's per-call costs are the larger).
_VECTOR_VARINT_BYTES = 9
_VECTOR_VARINTS = 48


class VarintError(ValueError):
    """The bytes at a position are not a complete varint of at most ten bytes."""


def encode_varint(value: int) -> bytes:
    """A non-negative integer as a minimal base-128 varint.

    >>> encode_varint(300).hex()
    'ac02'
    """
    if value < 0:
        raise ValueError("varints here are non-negative")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``buf[pos]`` (read no further than ``end``) and the position after it."""
    value = 0
    shift = 0
    limit = min(end, pos + MAX_VARINT_BYTES)
    while pos < limit:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise VarintError("truncated or overlong varint")


def encode_ascending(values: Iterable[int]) -> bytes:
    """Strictly ascending non-negative integers (below 2^64) as varint gaps.

    >>> encode_ascending([3, 4, 10]).hex()
    '030005'
    """
    values = list(values)
    if len(values) >= _VECTOR_VARINTS:
        # A codebook of 65,535 patterns one Python call each took most of encoding a dense net's small layers.
        array = np.array(values, dtype=np.uint64)  # OverflowError for a negative one or one of 2^64 and more
        if not (array[1:] > array[:-1]).all():
            raise ValueError("encode_ascending takes strictly ascending integers")
        return encode_varints(np.concatenate([array[:1], np.diff(array) - np.uint64(1)]))
    out = bytearray()
    previous = -1
    for value in values:
        out += encode_varint(value - previous - 1)
        previous = value
    return bytes(out)


def encode_varints(values: np.ndarray) -> bytes:
    """Each of the non-negative ``values`` (uint64) as a minimal varint, concatenated, with numpy."""
    values = np.asarray(values, dtype=np.uint64)
    lengths = np.ones(values.size, dtype=np.int64)
    rest = values >> np.uint64(7)
    while rest.any():
        lengths += rest > 0
        rest >>= np.uint64(7)
    starts = np.cumsum(lengths) - lengths
    out = np.empty(int(lengths.sum()), dtype=np.uint8)
    groups = values.copy()
    for group in range(int(lengths.max(initial=0))):
        live = lengths > group
        more = (lengths[live] > group + 1).astype(np.uint8) << 7  # the continuation bit
        out[starts[live] + group] = (groups[live] & np.uint64(0x7F)).astype(np.uint8) | more
        groups >>= np.uint64(7)
    return out.tobytes()


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
        try:
            value, pos = decode_varint(self.buf, self.pos, self.end)
        except VarintError as exc:
            raise FormatError(f"{what}: {exc}") from None
        if value > maximum:
            raise FormatError(f"{what} is {value}, more than the allowed {maximum}")
        self.pos = pos
        return value

    def varints(self, count: int, maximum: int, what: str) -> np.ndarray:
        """Read ``count`` varints, each at most ``maximum``, as int64: :meth:`varint` ``count`` times, at once.

        Model tables hold thousands of varints (a rANS plane's symbol counts,
        a codebook's gaps); decoding them one Python call each took most of
        the time small blobs spend decoding.  Here they are found and summed
        with numpy.  Anything amiss (a value too large, a truncated varint, one
        beyond 63 bits) is read again one varint at a time, so the error is
        exactly the one :meth:`varint` raises.
        """
        if count > self.remaining:  # each value takes at least one byte
            raise FormatError(f"{what}: {count} values declared but only {self.remaining} bytes remain")
        if count < _VECTOR_VARINTS:
            return self._varints_one_by_one(count, maximum, what)
        span = min(self.remaining, count * MAX_VARINT_BYTES)
        window = np.frombuffer(self.buf, dtype=np.uint8, count=span, offset=self.pos)
        ends = np.flatnonzero(window < 0x80)[:count]  # each varint's last byte
        lengths = np.diff(ends, prepend=-1) if ends.size == count else None
        if lengths is None or lengths.max() > _VECTOR_VARINT_BYTES:
            return self._varints_one_by_one(count, maximum, what)
        used = window[: ends[-1] + 1]
        starts = ends - lengths + 1
        shifts = 7 * (np.arange(used.size) - np.repeat(starts, lengths))
        values = np.add.reduceat((used & 0x7F).astype(np.int64) << shifts, starts)
        if int(values.max()) > maximum:
            return self._varints_one_by_one(count, maximum, what)
        self.pos += used.size
        return values

    def _varints_one_by_one(self, count: int, maximum: int, what: str) -> np.ndarray:
        values = [self.varint(what, maximum) for _ in range(count)]
        return np.array(values, dtype=np.int64 if max(values, default=0) < 1 << 63 else np.uint64)

    def ascending(self, count: int, limit: int, what: str) -> list[int]:
        """Read what :func:`encode_ascending` wrote: ``count`` values, each below ``limit``."""
        if count > self.remaining:  # each value takes at least one byte
            raise FormatError(f"{what}: {count} values declared but only {self.remaining} bytes remain")
        if count * (limit + 1) < 1 << 63:  # the sums fit int64 (codebooks of double values take the loop)
            start = self.pos
            values = np.cumsum(self.varints(count, limit, what) + 1) - 1
            if not count or values[-1] < limit:
                return values.tolist()
            self.pos = start  # out of range: the loop below says where
        values = []
        value = -1
        for _ in range(count):
            value += 1 + self.varint(what, limit)
            if value >= limit:
                raise FormatError(f"{what}: {value} is outside the range 0..{limit - 1}")
            values.append(value)
        return values

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

"""Varint sequences read at once (Reader.varints, Reader.ascending) agree with reading them one by one."""

import numpy as np
import pytest

from cmpstore.errors import FormatError
from cmpstore.streams.varint import Reader, encode_ascending, encode_varint


def one_by_one(data: bytes, count: int, maximum: int):
    reader = Reader(data)
    try:
        return [reader.varint("v", maximum) for _ in range(count)], reader.pos
    except FormatError as exc:
        return str(exc), None


def at_once(data: bytes, count: int, maximum: int):
    reader = Reader(data)
    try:
        return reader.varints(count, maximum, "v").tolist(), reader.pos
    except FormatError as exc:
        return str(exc), None


@pytest.mark.parametrize("seed", range(20))
def test_varints_match_one_by_one_reads(seed):
    rng = np.random.default_rng(seed)
    values = [int(v) for v in rng.integers(0, 2 ** int(rng.integers(1, 63)), size=int(rng.integers(1, 300)))]
    data = b"".join(map(encode_varint, values)) + b"\x05tail"
    assert at_once(data, len(values), max(values)) == (values, len(data) - 5)


@pytest.mark.parametrize(
    "data, count, maximum",
    [
        (encode_varint(300) + encode_varint(7), 2, 299),  # too large
        (encode_varint(5) + b"\x80\x80", 2, 10),  # truncated
        (b"\xff" * 10 + b"\x01", 1, 2**70),  # overlong
        (encode_varint(3), 2, 10),  # fewer than declared
        (encode_varint(2**63 + 5), 1, 2**64),  # ten bytes: read one by one, and fine
        (encode_varint(2**62) * 3, 3, 2**63),  # nine bytes each
    ],
)
def test_varints_fail_or_pass_exactly_as_one_by_one_reads(data, count, maximum):
    expected = one_by_one(data, count, maximum)
    if count > len(data):  # refused before reading: each varint takes a byte
        expected = (f"v: {count} values declared but only {len(data)} bytes remain", None)
    assert at_once(data, count, maximum) == expected


@pytest.mark.parametrize("limit", [2**8, 2**32, 2**64])
def test_ascending_reads_gaps_back(limit):
    values = sorted({int(v) for v in np.random.default_rng(1).integers(0, limit - 1, 500, dtype=np.uint64)})
    values[-1] = limit - 1
    reader = Reader(encode_ascending(values))
    assert reader.ascending(len(values), limit, "codebook") == values
    assert reader.remaining == 0


def test_ascending_past_the_limit_names_the_value():
    data = encode_ascending([3, 9, 12])
    with pytest.raises(FormatError, match=r"^codebook: 12 is outside the range 0..11$"):
        Reader(data).ascending(3, 12, "codebook")
    with pytest.raises(FormatError, match="codebook is 12, more than the allowed 11"):
        Reader(encode_varint(12)).ascending(1, 11, "codebook")


@pytest.mark.parametrize("limit", [2**8, 2**32, 2**64])
def test_ascending_writes_what_one_varint_at_a_time_writes(limit):
    values = sorted({int(v) for v in np.random.default_rng(2).integers(0, limit - 1, 700, dtype=np.uint64)})
    values[-1] = limit - 1
    gaps = [value - previous - 1 for previous, value in zip([-1, *values[:-1]], values, strict=True)]
    one_by_one = b"".join(map(encode_varint, gaps))
    assert encode_ascending(values) == one_by_one
    assert encode_ascending(values[:10]) == one_by_one[: len(encode_ascending(values[:10]))]


@pytest.mark.parametrize("bad", [[5, 5] * 30, list(range(60, 0, -1)), [-1, *range(60)], [2**64, *range(60)]])
def test_ascending_refuses_what_it_cannot_write(bad):
    with pytest.raises((ValueError, OverflowError)):
        encode_ascending(bad)

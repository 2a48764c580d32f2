import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmpstore.errors import FormatError
from cmpstore.streams import ans
from cmpstore.streams.varint import Reader, encode_varint


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=3000))
def test_roundtrip(symbols):
    symbols = np.array(symbols)
    data = ans.write_stream(symbols)
    reader = Reader(data)
    np.testing.assert_array_equal(ans.read_stream(reader, 301, symbols.size, "stream"), symbols)
    assert reader.remaining == 0
    skipper = Reader(data)
    ans.skip_stream(skipper, 301, symbols.size, "stream")
    assert skipper.remaining == 0


def test_within_half_a_percent_of_the_entropy():
    symbols = np.minimum(np.random.default_rng(0).geometric(0.15, 1_000_000), 255)
    counts = np.bincount(symbols)
    counts = counts[counts > 0]
    entropy_bytes = -(counts * np.log2(counts / counts.sum())).sum() / 8
    data = ans.write_stream(symbols)
    assert len(data) <= entropy_bytes * 1.005


def header(*values):
    return b"".join(encode_varint(v) for v in values)


@pytest.mark.parametrize(
    "data, message",
    [
        (header(0), "at least one symbol"),
        (header(2, 0, 0, 3, 3, 0), "do not add up"),  # counts 3 + 3 for a stream of 5
        (header(1, 4), "symbol: 4 is outside the range 0..3"),
        (header(1, 0, 5, 1) + b"\0\0\0\0", "no coded words"),
    ],
)
def test_invalid_streams(data, message):
    with pytest.raises(FormatError, match=message):
        ans.read_stream(Reader(data), 4, 5, "stream")


def test_leftover_words_are_rejected():
    data = ans.write_stream(np.array([0, 1, 1, 2, 0, 1]))
    reader = Reader(data)
    used = reader.varint("symbols in use", 10)
    for _ in range(2 * used):
        reader.varint("symbols and counts", 100)
    words_at = reader.pos
    words = reader.varint("word count", 100)
    tampered = data[:words_at] + encode_varint(words + 1) + data[reader.pos :] + b"\x01\0\0\0"
    with pytest.raises(FormatError):
        ans.read_stream(Reader(tampered), 3, 6, "stream")


def test_an_ans_stream_whose_last_word_is_zero_is_a_format_error():
    """Once "internal error ... please report it": constriction refuses such words with a ValueError."""
    stream = bytearray(ans.write_stream(np.array([0, 1, 1, 2, 0, 1] * 50)))
    stream[-4:] = b"\0\0\0\0"
    with pytest.raises(FormatError, match="stream: the last coded word is 0, which no encoder writes"):
        ans.read_stream(Reader(bytes(stream)), 3, 300, "stream")

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmpstore.errors import FormatError
from cmpstore.streams.huffman import MAX_CODE_LENGTH, CanonicalCode, code_lengths, coded_bits, read_stream, write_stream
from cmpstore.streams.varint import Reader, encode_varint


def roundtrip(symbols: np.ndarray, alphabet: int) -> bytes:
    code = CanonicalCode.from_frequencies(np.bincount(symbols, minlength=alphabet))
    data = write_stream(code, symbols)
    reader = Reader(data)
    decoded = read_stream(reader, alphabet, symbols.size, "stream")
    np.testing.assert_array_equal(decoded, symbols)
    assert reader.remaining == 0
    return data


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=2000))
def test_roundtrip_random_streams(symbols):
    roundtrip(np.array(symbols), 301)


def test_one_symbol_stream_takes_no_bits():
    data = roundtrip(np.full(10_000, 7), 16)
    assert len(data) <= 4


def test_lengths_are_optimal_against_bitarray():
    from bitarray.util import canonical_huffman

    rng = np.random.default_rng(0)
    symbols = np.minimum(rng.geometric(0.05, 50_000), 200)
    frequencies = np.bincount(symbols)
    codes, _, _ = canonical_huffman({s: int(f) for s, f in enumerate(frequencies) if f})
    optimum = sum(len(codes[s]) * int(f) for s, f in enumerate(frequencies) if f)
    assert coded_bits(frequencies, code_lengths(frequencies)) == optimum


def test_code_lengths_are_limited():
    fibonacci = [1, 1]
    while len(fibonacci) < 40:
        fibonacci.append(fibonacci[-1] + fibonacci[-2])
    lengths = code_lengths(np.array(fibonacci))
    assert lengths.max() <= MAX_CODE_LENGTH
    kraft = sum(2.0 ** -int(length) for length in lengths)
    assert kraft == 1.0


def test_both_table_forms_decode():
    dense = np.arange(256).repeat(3)  # every symbol used: per-symbol lengths win
    sparse = np.array([1, 1, 1, 9000, 60000])  # few symbols from a wide alphabet: listed wins
    assert roundtrip(dense, 256)[1] == 1
    assert roundtrip(sparse, 65536)[1] == 0


def table(*varints: int) -> bytes:
    return b"".join(encode_varint(v) for v in varints)


@pytest.mark.parametrize(
    "data, message",
    [
        (table(2, 0, 1, 1, 0, 1), "complete prefix code"),  # lengths 1 and 2 only: Kraft 3/4
        (table(1, 0, 2, 0, 3), "symbol: 4 is outside the range 0..3"),  # symbols 0 and 4 in an alphabet of 4
        (table(2, 0, 1, 2, 0, 0, 0), "more than one code"),  # symbol 0 at length 1 and at length 2
        (table(25), "more than the allowed 20"),
        (table(2, 0, 0, 0), "no code has the declared longest length"),
    ],
)
def test_invalid_tables_are_rejected(data, message):
    with pytest.raises(FormatError, match=message):
        CanonicalCode.read_table(Reader(data), 4, "table")


def test_nonzero_padding_is_rejected():
    code = CanonicalCode.from_frequencies(np.array([1, 1]))
    data = bytearray(write_stream(code, np.array([0, 1])))
    data[-1] |= 0x01
    with pytest.raises(FormatError, match="padding bits"):
        read_stream(Reader(bytes(data)), 2, 2, "stream")


def test_stream_with_extra_symbols_is_rejected():
    code = CanonicalCode.from_frequencies(np.array([2, 2]))
    data = write_stream(code, np.array([0, 1, 0, 1]))
    with pytest.raises(FormatError, match="more than 3 symbols"):
        read_stream(Reader(data), 2, 3, "stream")

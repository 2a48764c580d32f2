"""docs/FORMAT.md defines the rANS streams completely: an implementation written from it alone
(tests/spec/reference_ans.py) reads and writes exactly what cmpstore (through constriction) does."""

import numpy as np
import pytest
from spec import reference_ans as spec

from cmpstore.errors import FormatError
from cmpstore.streams import ans
from cmpstore.streams.varint import Reader


def parsed(stream: bytes):
    """The used symbols, counts and words of an ans_stream, read with the spec's layout."""
    reader = Reader(stream)
    used_count = reader.varint("U", 1 << 16)
    used = reader.ascending(used_count, 1 << 20, "symbols")
    counts = [reader.varint("count", 1 << 40) for _ in range(used_count)]
    words = reader.array(reader.varint("W", 1 << 30), np.dtype("<u4"), "words")
    reader.expect_end("stream")
    return np.array(used), counts, np.asarray(words, dtype=np.uint32)


def stream_case(index: int) -> np.ndarray:
    rng = np.random.default_rng(1000 + index)
    length = int(rng.choice([rng.integers(2, 60), rng.integers(60, 3000)]))
    used_count = int(rng.integers(2, min(300, length) + 1))
    weights = [np.ones(used_count), rng.geometric(0.3, used_count) ** 3.0, 1.0 / np.arange(1, used_count + 1) ** 2][
        index % 3
    ]
    counts = 1 + rng.multinomial(length - used_count, weights / weights.sum())
    alphabet = int(rng.integers(used_count, 70_000))
    used = np.sort(rng.choice(alphabet, used_count, replace=False))
    return used[rng.permutation(np.repeat(np.arange(used_count), counts))]


@pytest.mark.parametrize("index", range(40))
def test_the_spec_encodes_and_decodes_exactly_what_cmpstore_writes(index):
    symbols = stream_case(index)
    stream = ans.write_stream(symbols)
    used, counts, words = parsed(stream)
    dense = np.searchsorted(used, symbols)
    assert np.array_equal(spec.encode(dense, counts), words)
    assert np.array_equal(spec.decode_words(words, counts, symbols.size), dense)
    assert sum(spec.quantized_frequencies(counts)) == 1 << 24


@pytest.mark.parametrize("counts", [[2**31 - 1, 1], [3, 3, 3], [1] * 65536, [2**31 - 65535] + [1] * 65535])
def test_extreme_models_quantize_as_the_spec_says(counts):
    """One symbol coded from a fresh state leaves exactly its cdf as the only word: a probe of the model."""
    coder_class, categorical = ans._coder()
    weights = np.asarray(counts, dtype=np.int64)
    model = categorical(weights / weights.sum(), perfect=False)  # as cmpstore.streams.ans builds it
    cdf = spec.cumulative(counts)
    for symbol in sorted({0, 1, len(counts) // 2, len(counts) - 1}):
        coder = coder_class()
        coder.encode_reverse(np.array([symbol], dtype=np.int32), model)
        words = coder.get_compressed()
        assert (int(words[0]) if words.size else 0) == cdf[symbol]
        assert np.array_equal(spec.encode([symbol], counts), words)


def test_the_worked_example_of_the_spec():
    """The example under "rANS streams" in docs/FORMAT.md, byte for byte."""
    stream = bytes.fromhex(
        "08 00 01 00 03 00 00 02 12 0e 09 05 03 02 01 01 01 04 e7 16 c6 45 02 88 b3 fd 5d f2 84 f9 bf 00 00 00"
    )
    dense = [1, 0, 0, 0, 5, 2, 0, 2, 0, 1, 6, 4, 0, 1, 3, 7, 2, 2, 0, 2, 0, 3, 0, 3, 0, 1, 4, 1, 1, 1, 1, 0, 0, 1, 0, 0]
    used = np.array([0, 2, 3, 7, 8, 9, 12, 31])
    assert ans.write_stream(used[dense]) == stream
    assert np.array_equal(ans.read_stream(Reader(stream), 32, len(dense), "example"), used[dense])
    _, counts, words = parsed(stream)
    assert spec.cumulative(counts) == [0, 6524470, 10718773, 13048942, 14447044, 15379112, 15845146, 16311181, 1 << 24]
    assert np.array_equal(spec.decode_words(words, counts, len(dense)), dense)


def test_a_stream_that_ends_in_a_zero_word_is_refused_by_both():
    stream = bytearray(ans.write_stream(np.array([0, 1, 1, 2] * 40)))
    stream[-4:] = bytes(4)
    with pytest.raises(FormatError, match="the last coded word is 0"):
        ans.read_stream(Reader(bytes(stream)), 3, 160, "stream")
    _, counts, words = parsed(bytes(stream))
    with pytest.raises(spec.AnsError):
        spec.decode_words(words, counts, 160)

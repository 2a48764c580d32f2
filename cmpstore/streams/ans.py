"""Range-ANS coding of integer symbol streams, an alternative to Huffman coding.

Huffman spends a whole number of bits per symbol; rANS (Duda 2013) comes
within a hair of the zero-order entropy, which matters for skewed streams
such as relative indices.  The coder is constriction's ``AnsCoder`` (Rust),
with a categorical model built from the symbol counts, so encoding and
decoding run at native speed.

Stream layout (varints are LEB128)::

    varint U          symbols in use, 1 .. alphabet size
    U varints         those symbols, ascending: each as (symbol - previous - 1)
    U varints         how often each occurs (>= 1); they sum to the stream length
    varint W          32-bit words of coded data (0 when U == 1)
    W x uint32 LE     constriction's compressed words

The model is rebuilt from the counts as ``counts / sum(counts)`` in float64,
so encoder and decoder quantize the same probabilities.
"""

from __future__ import annotations

import numpy as np

from ..errors import FormatError
from .varint import Reader, encode_ascending, encode_varint


def _coder():
    import constriction

    return constriction.stream.stack.AnsCoder, constriction.stream.model.Categorical


def write_stream(symbols: np.ndarray) -> bytes:
    """Code ``symbols`` (non-negative integers); return the stream's bytes."""
    used, dense, counts = _dense(symbols)
    out = bytearray(encode_varint(used.size) + encode_ascending(used.tolist()))
    for count in counts.tolist():
        out += encode_varint(count)
    if used.size < 2:
        return bytes(out + encode_varint(0))
    coder_class, categorical = _coder()
    coder = coder_class()
    coder.encode_reverse(dense, categorical(counts / counts.sum(), perfect=False))
    words = coder.get_compressed().astype("<u4")
    return bytes(out + encode_varint(words.size)) + words.tobytes()


#: Symbols decoded per call into the coder: its int32 output for them is the only scratch memory.
DECODE_CHUNK = 1 << 20


def read_stream(
    reader: Reader, alphabet_size: int, count: int, what: str, dtype: type = np.int32, out: np.ndarray | None = None
) -> np.ndarray:
    """Read what :func:`write_stream` wrote; exactly ``count`` symbols below ``alphabet_size``, as ``dtype``.

    With ``out`` (``count`` elements) the symbols are written there.  They
    are decoded :data:`DECODE_CHUNK` at a time, so a stream of n symbols
    needs its output and a few MiB, never n int32s besides (a 153-byte file
    could otherwise ask for gigabytes of scratch, beyond its decoded size).
    """
    used_count = reader.varint(f"{what} symbols in use", min(alphabet_size, max(count, 1)))
    if used_count == 0:
        raise FormatError(f"{what}: a stream must use at least one symbol")
    used = np.array(reader.ascending(used_count, alphabet_size, f"{what} symbol"), dtype=dtype)
    counts = reader.varints(used_count, count, f"{what} symbol count")
    if counts.min() < 1 or int(counts.sum()) != count:
        raise FormatError(f"{what}: symbol counts do not add up to the {count} symbols of the stream")
    word_count = reader.varint(f"{what} word count", reader.remaining // 4)
    words = reader.array(word_count, np.dtype("<u4"), f"{what} words")
    if out is None:
        out = np.empty(count, dtype=dtype)
    if used_count == 1:
        if word_count:
            raise FormatError(f"{what}: a one-symbol stream must have no coded words")
        out[...] = used[0]
        return out
    if word_count and words[-1] == 0:
        # The encoder's last word is the top of its final state, never 0 (docs/FORMAT.md, rANS streams).
        raise FormatError(f"{what}: the last coded word is 0, which no encoder writes")
    coder_class, categorical = _coder()
    decoder = coder_class(np.ascontiguousarray(words, dtype=np.uint32))
    model = categorical(counts / counts.sum(), perfect=False)
    seen = np.zeros(used_count, dtype=np.int64)
    for start in range(0, count, DECODE_CHUNK):
        size = min(DECODE_CHUNK, count - start)
        dense = np.asarray(decoder.decode(model, size))
        seen += np.bincount(dense, minlength=used_count)
        out[start : start + size] = used[dense]
    if not decoder.is_empty():
        raise FormatError(f"{what}: coded words left over after {count} symbols")
    if not np.array_equal(seen, counts):
        raise FormatError(f"{what}: the coded words do not match the declared symbol counts")
    return out


def skip_stream(reader: Reader, alphabet_size: int, count: int, what: str) -> int:
    """Step over a stream without decoding it; return its coded size in bits."""
    used_count = reader.varint(f"{what} symbols in use", min(alphabet_size, max(count, 1)))
    reader.varints(2 * used_count, max(alphabet_size, count), what)
    word_count = reader.varint(f"{what} word count", reader.remaining // 4)
    reader.array(word_count, np.dtype("<u4"), f"{what} words")
    return 32 * word_count


#: Above this alphabet a symbol table would cost more than the sort it saves.
_COUNTED_ALPHABET = 1 << 20


def _dense(symbols: np.ndarray):
    """Symbols in use, each symbol's index among them (int32, for constriction), and counts."""
    symbols = symbols.reshape(-1)
    if symbols.size and 0 <= symbols.min() and symbols.max() < _COUNTED_ALPHABET:
        # Every stream cmpstore writes has a small alphabet (bytes, gaps, codebook indices):
        # counting is linear, where np.unique sorts (ten times slower on a byte plane).
        all_counts = np.bincount(symbols)
        used = np.flatnonzero(all_counts)
        index_of = np.zeros(all_counts.size, dtype=np.int32)
        index_of[used] = np.arange(used.size, dtype=np.int32)
        return used.astype(symbols.dtype), index_of[symbols], all_counts[used]
    used, dense, counts = np.unique(symbols, return_inverse=True, return_counts=True)
    return used, dense.astype(np.int32).reshape(-1), counts

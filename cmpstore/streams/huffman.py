"""Canonical Huffman coding of integer symbol streams.

A code is stored as a table of code lengths (never a tree): the number of
codes of each length and the symbols in canonical order, which is exactly
what :func:`bitarray.util.canonical_decode` takes, so decoding runs in C.

Invariants
----------
* Code lengths are at most :data:`MAX_CODE_LENGTH` bits.
* A code with two or more symbols is complete (Kraft sum exactly 1); a
  stream that uses a single symbol has code length 0 and no bits at all.
* Canonical order is (code length, symbol), so the same frequencies always
  give the same bytes.

Table layout (all integers are LEB128 varints)::

    max_length L                      0 .. MAX_CODE_LENGTH
    if L == 0:  symbol                the only symbol
    else:       form                  0 = listed, 1 = per-symbol lengths
      listed:   count[1] .. count[L]  codes of each length
                symbols               per length, ascending: the first as is,
                                      each next one as (symbol - previous - 1)
      lengths:  A                     the code covers symbols 0 .. A-1
                A lengths             bit_length(L) bits each, MSB first,
                                      0 for an unused symbol, zero-padded to a byte

The writer picks the shorter form: listed suits a few symbols from a wide
alphabet (gaps), per-symbol lengths suit a codebook where every entry is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from bitarray import bitarray, frozenbitarray
from bitarray.util import canonical_decode, int2ba

from ..errors import FormatError
from ..limits import MAX_CODE_LENGTH
from .varint import Reader, encode_ascending, encode_varint

#: Table forms.
LISTED = 0
PER_SYMBOL_LENGTHS = 1


def code_lengths(frequencies: np.ndarray) -> np.ndarray:
    """Huffman code length of each symbol, limited to :data:`MAX_CODE_LENGTH`.

    Parameters
    ----------
    frequencies : ndarray of int
        ``frequencies[s]`` is how often symbol ``s`` occurs; 0 for unused.

    Returns
    -------
    ndarray of uint8
        Length per symbol, 0 for unused symbols (and for the only symbol of a
        one-symbol stream).

    Examples
    --------
    >>> code_lengths(np.array([5, 0, 1, 1])).tolist()
    [1, 0, 2, 2]
    """
    frequencies = np.asarray(frequencies, dtype=np.int64)
    lengths = np.zeros(frequencies.size, dtype=np.uint8)
    used = np.flatnonzero(frequencies)
    if used.size < 2:
        return lengths
    weights = frequencies[used]
    while True:
        depths = _huffman_depths(weights)
        if depths.max() <= MAX_CODE_LENGTH:
            lengths[used] = depths
            return lengths
        # Flattening the distribution shortens the longest codes; halving
        # repeatedly ends, at worst, in a balanced code of <= 16 bits.
        weights = np.maximum(weights >> 1, 1)


def _huffman_depths(weights: np.ndarray) -> np.ndarray:
    """Leaf depths of a Huffman tree, by the two-queue method on sorted weights."""
    n = weights.size
    order = np.argsort(weights, kind="stable")
    leaf_weights = weights[order].tolist()
    node_weights = []
    parent = [0] * (2 * n - 1)
    leaf_next = 0
    node_next = 0
    for new_node in range(n - 1):
        children = []
        for _ in range(2):
            take_leaf = leaf_next < n and (
                node_next >= len(node_weights) or leaf_weights[leaf_next] <= node_weights[node_next]
            )
            if take_leaf:
                children.append((leaf_next, leaf_weights[leaf_next]))
                leaf_next += 1
            else:
                children.append((n + node_next, node_weights[node_next]))
                node_next += 1
        for child, _ in children:
            parent[child] = n + new_node
        node_weights.append(children[0][1] + children[1][1])
    depth = [0] * (2 * n - 1)
    for node in range(2 * n - 3, -1, -1):
        depth[node] = depth[parent[node]] + 1
    depths = np.empty(n, dtype=np.uint8)
    depths[order] = depth[:n]
    return depths


def coded_bits(frequencies: np.ndarray, lengths: np.ndarray) -> int:
    """Number of bits a stream with these symbol frequencies takes under this code."""
    return int(np.dot(np.asarray(frequencies, dtype=np.int64), lengths.astype(np.int64)))


@dataclass(frozen=True)
class CanonicalCode:
    """A canonical prefix code: ``count[l]`` codes of length ``l``, symbols in canonical order."""

    count: tuple[int, ...]  # count[0] is always 0
    symbols: tuple[int, ...]

    @classmethod
    def from_frequencies(cls, frequencies: np.ndarray) -> CanonicalCode:
        return cls.from_lengths(code_lengths(frequencies), np.asarray(frequencies))

    @classmethod
    def from_lengths(cls, lengths: np.ndarray, frequencies: np.ndarray) -> CanonicalCode:
        used = np.flatnonzero(frequencies)
        if used.size == 1:
            return cls((0,), (int(used[0]),))
        max_length = int(lengths.max()) if lengths.size else 0
        count = [0] * (max_length + 1)
        for length in lengths[used]:
            count[length] += 1
        order = np.lexsort((used, lengths[used]))  # canonical: by length, then symbol
        return cls(tuple(count), tuple(int(s) for s in used[order]))

    @property
    def max_length(self) -> int:
        return len(self.count) - 1

    @property
    def is_single_symbol(self) -> bool:
        return self.max_length == 0

    def lengths(self, alphabet_size: int) -> np.ndarray:
        """Code length per symbol (0 where unused)."""
        lengths = np.zeros(alphabet_size, dtype=np.uint8)
        position = 0
        for length, how_many in enumerate(self.count):
            lengths[list(self.symbols[position : position + how_many])] = length
            position += how_many
        return lengths

    def codewords(self) -> dict[int, frozenbitarray]:
        """Symbol -> codeword, assigned canonically (DEFLATE's rule)."""
        codewords = {}
        code = 0
        position = 0
        for length in range(1, len(self.count)):
            code <<= 1
            for symbol in self.symbols[position : position + self.count[length]]:
                codewords[symbol] = frozenbitarray(format(code, f"0{length}b"))
                code += 1
            position += self.count[length]
        return codewords

    def table_bytes(self) -> bytes:
        head = encode_varint(self.max_length)
        if self.is_single_symbol:
            return head + encode_varint(self.symbols[0])
        return head + min(self._listed_form(), self._lengths_form(), key=len)

    def _listed_form(self) -> bytes:
        out = bytearray(encode_varint(LISTED))
        for how_many in self.count[1:]:
            out += encode_varint(how_many)
        position = 0
        for how_many in self.count[1:]:
            out += encode_ascending(self.symbols[position : position + how_many])
            position += how_many
        return bytes(out)

    def _lengths_form(self) -> bytes:
        covered = max(self.symbols) + 1
        width = self.max_length.bit_length()
        bits = bitarray(endian="big")
        for length in self.lengths(covered).tolist():
            bits += int2ba(length, width, endian="big")
        return encode_varint(PER_SYMBOL_LENGTHS) + encode_varint(covered) + bits.tobytes()

    @classmethod
    def read_table(cls, reader: Reader, alphabet_size: int, what: str) -> CanonicalCode:
        """Read and validate a table; symbols must lie in ``range(alphabet_size)``."""
        max_length = reader.varint(f"{what} code length limit", MAX_CODE_LENGTH)
        if max_length == 0:
            symbol = reader.varint(f"{what} symbol", alphabet_size - 1)
            return cls((0,), (symbol,))
        form = reader.varint(f"{what} table form", PER_SYMBOL_LENGTHS)
        if form == LISTED:
            count = [0] + [reader.varint(f"{what} code count", alphabet_size) for _ in range(max_length)]
            _check_counts(count, alphabet_size, what)
            symbols = []
            for how_many in count[1:]:
                symbols += reader.ascending(how_many, alphabet_size, f"{what} symbol")
            if len(set(symbols)) != len(symbols):
                raise FormatError(f"{what}: a symbol has more than one code")
            return cls(tuple(count), tuple(symbols))
        covered = reader.varint(f"{what} symbols covered", alphabet_size)
        width = max_length.bit_length()
        packed = reader.take((covered * width + 7) // 8, f"{what} code lengths")
        # Each length is `width` bits, most significant first: unpacked, one row per symbol.
        bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8))[: covered * width].reshape(covered, width)
        lengths = bits.astype(np.int64) @ (1 << np.arange(width - 1, -1, -1, dtype=np.int64))
        if lengths.size and lengths.max() > max_length:
            raise FormatError(f"{what}: a code length exceeds the declared limit {max_length}")
        count = np.bincount(lengths, minlength=max_length + 1).tolist()
        count[0] = 0
        _check_counts(count, alphabet_size, what)
        return cls.from_lengths(lengths.astype(np.uint8), lengths)

    def encode(self, symbols: np.ndarray) -> bitarray:
        """Huffman-code a stream of symbols (all of which must be in the code)."""
        bits = bitarray(endian="big")
        if not self.is_single_symbol:
            bits.encode(self.codewords(), symbols.tolist())
        return bits

    def decode(self, bits: bitarray, count: int, what: str) -> np.ndarray:
        """Decode exactly ``count`` symbols from ``bits``, which must hold nothing else."""
        if self.is_single_symbol:
            if len(bits):
                raise FormatError(f"{what}: a one-symbol stream must have no bits, found {len(bits)}")
            return np.full(count, self.symbols[0], dtype=np.int32)
        if len(bits) < count:  # every code is at least one bit long
            raise FormatError(f"{what}: {len(bits)} bits cannot hold {count} symbols")
        try:
            symbols = np.fromiter(
                canonical_decode(bits, list(self.count), list(self.symbols)), dtype=np.int32, count=count
            )
        except ValueError as exc:
            raise FormatError(f"{what}: the bit stream does not decode ({exc})") from None
        # fromiter stops after `count`; the rest must have been exactly consumed.
        if coded_length(symbols, self) != len(bits):
            raise FormatError(f"{what}: the bit stream holds more than {count} symbols")
        return symbols


def _check_counts(count: list[int], alphabet_size: int, what: str) -> None:
    max_length = len(count) - 1
    if count[-1] == 0:
        raise FormatError(f"{what}: no code has the declared longest length {max_length}")
    kraft = sum(how_many << (max_length - length) for length, how_many in enumerate(count) if length)
    if kraft != 1 << max_length:
        raise FormatError(f"{what}: code lengths do not form a complete prefix code")
    if sum(count) > alphabet_size:
        raise FormatError(f"{what}: {sum(count)} codes for an alphabet of {alphabet_size} symbols")


def coded_length(symbols: np.ndarray, code: CanonicalCode) -> int:
    """Bits taken by ``symbols`` under ``code``."""
    if code.is_single_symbol or symbols.size == 0:
        return 0
    lengths = code.lengths(int(max(code.symbols)) + 1)
    return int(lengths[symbols].sum(dtype=np.int64))


def write_stream(code: CanonicalCode, symbols: np.ndarray) -> bytes:
    """Table, bit length and bytes of one coded stream."""
    bits = code.encode(symbols)
    return code.table_bytes() + encode_varint(len(bits)) + bits.tobytes()


def read_stream(reader: Reader, alphabet_size: int, count: int, what: str) -> np.ndarray:
    """Read what :func:`write_stream` wrote and decode ``count`` symbols."""
    code = CanonicalCode.read_table(reader, alphabet_size, what)
    bit_length = reader.varint(f"{what} bit length", 8 * reader.remaining)
    raw = reader.take((bit_length + 7) // 8, f"{what} bits")
    bits = bitarray(endian="big")
    bits.frombytes(bytes(raw))
    if bits[bit_length:].any():
        raise FormatError(f"{what}: padding bits after the stream are not zero")
    del bits[bit_length:]
    return code.decode(bits, count, what)

"""Sparse codec: relative-indexed CSR, codebook indices, Huffman on both streams.

This is the storage scheme of Deep Compression (Han, Mao, Dally 2016, sec. 2
and 4).  The nonzeros of a blob (by bit pattern: ``-0.0`` counts as nonzero)
are stored as entries in position order.  Each entry has

* a gap symbol in the *index stream* (see :mod:`cmpstore.streams.relative_index`), and
* a codebook index in the *weight stream*, or, when the blob has more
  distinct values than :data:`MAX_CODEBOOK_ENTRIES` or a codebook would not
  pay off, the raw value.

Filler entries hold ``+0.0``; when there are fillers the codebook gains
``+0.0`` as its first entry.  ``index_bits`` is chosen per blob to minimise
the payload unless the caller fixes it.

Payload layout (varints are LEB128)::

    varint index_bits      1 .. 16
    varint entry_count     nonzeros + fillers, <= count
    varint filler_count    <= entry_count
    varint value_coding    0 = codebook, 1 = raw values
    -- only if entry_count > 0 --
    index stream           Huffman stream over gaps, alphabet 2**index_bits
    value_coding 0:        varint codebook_size K, K values, Huffman stream over range(K)
    value_coding 1:        entry_count values
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError
from ..format_versions import Feature, first_version
from ..limits import MAX_CODEBOOK_ENTRIES, MAX_INDEX_BITS, MIN_INDEX_BITS
from ..streams import ans, deflate_symbols, huffman
from ..streams.codebook import bit_patterns, build_codebook, codebook_bytes, read_codebook
from ..streams.relative_index import (
    gap_histogram,
    gaps_with_fillers,
    nonzero_gaps,
    positions_from_gaps,
)
from ..streams.varint import Reader, encode_varint
from .base import BlobCodec, BlobStats, output_for, scratch_values

CODEBOOK = 0
RAW_VALUES = 1


@dataclass(frozen=True)
class SymbolStreams:
    """How a sparse codec entropy-codes its two symbol streams (relative indices, codebook indices)."""

    #: The stream's bytes, from the plan's canonical Huffman code (which only Huffman streams use) and the symbols.
    write: Callable[[huffman.CanonicalCode, np.ndarray], bytes]
    #: ``(reader, alphabet_size, count, what)``: exactly ``count`` symbols below ``alphabet_size``.
    read: Callable[[Reader, int, int, str], np.ndarray]
    #: The same arguments: step over the stream without decoding it; its coded size in bits.
    skip: Callable[[Reader, int, int, str], int]


def _skip_huffman(reader: Reader, alphabet_size: int, count: int, what: str) -> int:
    huffman.CanonicalCode.read_table(reader, alphabet_size, what)
    bit_length = reader.varint(f"{what} bit length", 8 * reader.remaining)
    reader.take((bit_length + 7) // 8, f"{what} bits")
    return bit_length


HUFFMAN_STREAMS = SymbolStreams(huffman.write_stream, huffman.read_stream, _skip_huffman)
ANS_STREAMS = SymbolStreams(lambda code, symbols: ans.write_stream(symbols), ans.read_stream, ans.skip_stream)
DEFLATE_STREAMS = SymbolStreams(
    lambda code, symbols: deflate_symbols.write_stream(symbols),
    deflate_symbols.read_stream,
    lambda reader, alphabet_size, count, what: deflate_symbols.skip_stream(reader, what),
)


class SparseCodec(BlobCodec):
    """Relative-indexed sparse storage with a shared-weight codebook.

    Parameters
    ----------
    index_bits : int, optional
        Fix the width of the relative index (the paper uses 8 for conv and 5
        for fc layers); by default it is chosen per blob for the smallest payload.

    Examples
    --------
    >>> codec = SparseCodec()
    >>> values = np.zeros(1000, dtype="<f4")
    >>> values[::10] = [0.5, -0.25] * 50
    >>> payload = codec.encode(values)
    >>> len(payload)
    52
    >>> bool((codec.decode(payload, 1000, values.dtype, "blob") == values).all())
    True
    """

    codec_id = 2
    name = "sparse"
    #: The widest relative index and the largest codebook the streams can code.
    max_index_bits = MAX_INDEX_BITS
    max_codebook_entries = MAX_CODEBOOK_ENTRIES
    #: The entropy coder of both streams: canonical Huffman here; the subclasses swap it.
    streams = HUFFMAN_STREAMS

    def __init__(self, index_bits: int | None = None):
        if index_bits is not None and not MIN_INDEX_BITS <= index_bits <= self.max_index_bits:
            raise ValueError(f"index_bits must be in {MIN_INDEX_BITS}..{self.max_index_bits}, got {index_bits}")
        self.index_bits = index_bits

    def encode(self, values: np.ndarray) -> bytes:
        positions = np.flatnonzero(bit_patterns(values)).astype(np.int32)
        if positions.size == 0:
            return _header(self.index_bits or MIN_INDEX_BITS, 0, 0, CODEBOOK)
        codebook, value_indices = build_codebook(values[positions])
        gaps = nonzero_gaps(positions)
        plan = _plan(gaps, codebook, value_indices, self.index_bits, self.max_index_bits, self.max_codebook_entries)
        stored_gaps, filler_entries = gaps_with_fillers(positions, plan.index_bits)
        entry_count = stored_gaps.size
        out = [_header(plan.index_bits, entry_count, filler_entries.size, plan.value_coding)]
        out.append(self.streams.write(plan.index_code, stored_gaps))
        is_value = np.ones(entry_count, dtype=bool)
        is_value[filler_entries] = False
        if plan.value_coding == CODEBOOK:
            symbols = np.zeros(entry_count, dtype=np.int32 if codebook.size >= 1 << 16 else np.uint16)
            symbols[is_value] = value_indices
            if filler_entries.size:
                codebook = np.concatenate([np.zeros(1, codebook.dtype), codebook])
                symbols[is_value] += 1
            out += [encode_varint(codebook.size), codebook_bytes(codebook)]
            out.append(self.streams.write(plan.weight_code, symbols))
        else:
            stored = np.zeros(entry_count, dtype=values.dtype)
            stored[is_value] = values[positions]
            out.append(stored.tobytes())
        return b"".join(out)

    def decode(self, payload, count: int, dtype: np.dtype, what: str, out: np.ndarray | None = None) -> np.ndarray:
        out = output_for(out, count, dtype)
        positions, entry_values = self.decode_entries(payload, count, dtype, what)
        if out is None:
            out = np.zeros(count, dtype=dtype)
        else:
            out.fill(0)
        out[positions] = entry_values
        return out

    def windows(self, payload, count: int, dtype: np.dtype, what: str, window: int, scratch=None):
        """Pieces of one reused buffer (``scratch`` where given), zeroed and filled with each window's entries in turn.

        A sparse blob's entries take a fraction of its dense size, so a
        streaming writer holds them and one window, never the dense blob.
        """
        positions, entry_values = self.decode_entries(payload, count, dtype, what)
        buffer = scratch_values(scratch, min(window, count), dtype)
        if buffer is None:
            buffer = np.empty(min(window, count), dtype=dtype)
        if count <= window:  # one piece: the positions are its own, nothing to shift
            buffer.fill(0)
            buffer[positions] = entry_values
            yield 0, buffer
            return
        starts = np.arange(0, count, window, dtype=np.int64)
        bounds = np.searchsorted(positions, np.append(starts, count))
        for number, start in enumerate(starts.tolist()):
            piece = buffer[: min(window, count - start)]
            piece.fill(0)
            low, high = bounds[number], bounds[number + 1]
            piece[positions[low:high] - start] = entry_values[low:high]
            yield start, piece

    def decode_entries(self, payload, count: int, dtype: np.dtype, what: str) -> tuple[np.ndarray, np.ndarray]:
        """The stored entries: strictly ascending positions (int64) and their values (fillers are zeros)."""
        reader = Reader(payload)
        index_bits, entry_count, filler_count, value_coding = _read_header(reader, count, what, self.max_index_bits)
        if entry_count == 0:
            reader.expect_end(what)
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=dtype)
        gaps = self.streams.read(reader, 1 << index_bits, entry_count, f"{what} index stream")
        try:
            positions = positions_from_gaps(gaps, count)
        except FormatError as exc:
            raise exc.located(where=what) from None
        if value_coding == CODEBOOK:
            codebook_size = reader.varint(f"{what} codebook size", min(entry_count, self.max_codebook_entries))
            if codebook_size == 0:
                raise FormatError(f"{what}: empty codebook for {entry_count} entries")
            codebook = read_codebook(reader, codebook_size, dtype, f"{what} codebook")
            symbols = self.streams.read(reader, codebook_size, entry_count, f"{what} weight stream")
            # Every symbol was checked to be below codebook_size, so take need not check again
            # ("clip" skips its bounds check: twice as fast as codebook[symbols]).
            entry_values = codebook.take(symbols, mode="clip")
        else:
            entry_values = reader.array(entry_count, dtype, f"{what} values")
        reader.expect_end(what)
        zero_entries = int(np.count_nonzero(bit_patterns(entry_values) == 0))
        if zero_entries != filler_count:
            raise FormatError(f"{what}: {zero_entries} zero entries but {filler_count} fillers declared")
        return positions, entry_values

    def describe(self, payload, count: int, dtype: np.dtype, what: str) -> BlobStats:
        reader = Reader(payload)
        index_bits, entry_count, filler_count, value_coding = _read_header(reader, count, what, self.max_index_bits)
        stats = BlobStats(
            codec=self.name,
            count=count,
            nonzero=entry_count - filler_count,
            index_bits=index_bits,
            entries=entry_count,
            fillers=filler_count,
            index_stream_bits=0,
            weight_stream_bits=0,
        )
        if entry_count == 0:
            stats.distinct = 0
            return stats
        start = reader.pos
        stats.index_stream_bits = self.streams.skip(reader, 1 << index_bits, entry_count, f"{what} index stream")
        stats.index_bytes = reader.pos - start
        if value_coding == CODEBOOK:
            codebook_size = reader.varint(f"{what} codebook size", min(entry_count, self.max_codebook_entries))
            start = reader.pos
            read_codebook(reader, codebook_size, dtype, f"{what} codebook")
            stats.codebook_bytes = reader.pos - start
            stats.codebook_entries = codebook_size
            stats.distinct = codebook_size - (1 if filler_count else 0)
            start = reader.pos
            stats.weight_stream_bits = self.streams.skip(reader, codebook_size, entry_count, f"{what} weight stream")
            stats.weight_bytes = reader.pos - start
        else:
            values = reader.array(entry_count, dtype, f"{what} values")
            stats.weight_stream_bits = 8 * dtype.itemsize * entry_count
            stats.weight_bytes = values.nbytes
            patterns = bit_patterns(values)
            stats.distinct = int(np.unique(patterns[patterns != 0]).size)
            stats.note = (
                f"raw values: {stats.distinct:,} distinct values, more than a codebook may hold"
                if stats.distinct >= self.max_codebook_entries
                else "raw values: a codebook would not pay off"
            )
        return stats


class SparseAnsCodec(SparseCodec):
    """:class:`SparseCodec` with both streams range-ANS coded (:mod:`cmpstore.streams.ans`) instead of Huffman.

    ``index_bits`` is chosen by the Huffman cost, which tracks the ANS cost closely.

    Examples
    --------
    >>> values = np.zeros(1000, dtype="<f4")
    >>> values[::10] = [0.5, -0.25] * 50
    >>> codec = SparseAnsCodec()
    >>> bool((codec.decode(codec.encode(values), 1000, values.dtype, "blob") == values).all())
    True
    """

    codec_id = 3
    name = "sparse-ans"
    streams = ANS_STREAMS


class SparseDeflateCodec(SparseCodec):
    """:class:`SparseCodec` with both streams raw DEFLATE of Huffman codes only (streams.deflate_symbols).

    Symbols are bytes, so indices are at most 8 bits wide and a codebook has
    at most 256 entries (a blob with more distinct values stores them raw).
    It decodes several times faster than canonical Huffman through Python,
    for a fraction of a percent more bytes; the writer prefers it for large
    blobs (see :mod:`cmpstore.cmps.writer`).  Format version 5.

    Examples
    --------
    >>> values = np.zeros(1000, dtype="<f4")
    >>> values[::10] = [0.5, -0.25] * 50
    >>> codec = SparseDeflateCodec()
    >>> bool((codec.decode(codec.encode(values), 1000, values.dtype, "blob") == values).all())
    True
    """

    codec_id = 5
    name = "sparse-deflate"
    format_version = first_version(Feature.SPARSE_DEFLATE)
    max_index_bits = 8
    max_codebook_entries = deflate_symbols.MAX_ALPHABET
    streams = DEFLATE_STREAMS


class _Plan:
    def __init__(self, index_bits, index_code, value_coding, weight_code, size):
        self.index_bits = index_bits
        self.index_code = index_code
        self.value_coding = value_coding
        self.weight_code = weight_code
        self.size = size


def _plan(
    gaps: np.ndarray,
    codebook: np.ndarray,
    value_indices: np.ndarray,
    fixed_bits: int | None,
    max_index_bits: int,
    max_codebook_entries: int,
) -> _Plan:
    """Pick index_bits and value coding for the smallest payload (sizes as canonical Huffman codes them)."""
    itemsize = codebook.dtype.itemsize
    value_counts = np.bincount(value_indices, minlength=codebook.size)
    use_codebook = codebook.size <= max_codebook_entries - 1  # one slot kept for the filler zero
    codebook_cost = len(codebook_bytes(codebook)) if use_codebook else 0
    candidates = [fixed_bits] if fixed_bits else range(MIN_INDEX_BITS, max_index_bits + 1)
    best = None
    for index_bits in candidates:
        gap_counts, fillers = gap_histogram(gaps, index_bits)
        index_code = huffman.CanonicalCode.from_frequencies(gap_counts)
        size = _stream_size(index_code, gap_counts)
        entries = gaps.size + fillers
        raw_size = entries * itemsize
        weight_code = None
        value_coding = RAW_VALUES
        if use_codebook:
            weight_counts = np.concatenate([[fillers], value_counts]) if fillers else value_counts
            weight_code = huffman.CanonicalCode.from_frequencies(weight_counts)
            coded_size = codebook_cost + (1 if fillers else 0) + _stream_size(weight_code, weight_counts)
            if coded_size < raw_size:
                value_coding = CODEBOOK
                raw_size = coded_size
        size += raw_size
        if best is None or size < best.size:
            best = _Plan(index_bits, index_code, value_coding, weight_code, size)
        if fillers == 0:
            break  # wider indices cannot do better once no fillers remain
    return best


def _stream_size(code: huffman.CanonicalCode, counts: np.ndarray) -> int:
    bits = 0 if code.is_single_symbol else huffman.coded_bits(counts, code.lengths(counts.size))
    return len(code.table_bytes()) + len(encode_varint(bits)) + (bits + 7) // 8


def _header(index_bits: int, entry_count: int, filler_count: int, value_coding: int) -> bytes:
    return b"".join(encode_varint(v) for v in (index_bits, entry_count, filler_count, value_coding))


def _read_header(reader: Reader, count: int, what: str, max_index_bits: int) -> tuple[int, int, int, int]:
    index_bits = reader.varint(f"{what} index bits", max_index_bits)
    if index_bits < MIN_INDEX_BITS:
        raise FormatError(f"{what}: index bits must be at least {MIN_INDEX_BITS}")
    entry_count = reader.varint(f"{what} entry count", count)
    filler_count = reader.varint(f"{what} filler count", entry_count)
    value_coding = reader.varint(f"{what} value coding", RAW_VALUES)
    return index_bits, entry_count, filler_count, value_coding

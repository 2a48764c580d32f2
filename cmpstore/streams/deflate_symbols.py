"""Byte-symbol streams as raw DEFLATE blocks of Huffman codes only (RFC 1951), decoded by zlib.

Why a second Huffman stream beside :mod:`cmpstore.streams.huffman`: that one
decodes through a Python iterator, about 30 ns a symbol, which made the
entropy decoding of VGG-16's fc6 (8 million symbols) most of decode's time.
DEFLATE with zlib's ``Z_HUFFMAN_ONLY`` strategy is canonical Huffman coding
too (no string matching, so nothing refers back across the stream), and
zlib's inflate runs in C at a few ns a symbol.  It costs a fraction of a
percent more bytes: DEFLATE codes are at most 15 bits long, each block of
about 16,000 symbols carries its own code table, and symbols are bytes,
which is why the sparse codec that uses it keeps index widths and codebooks
within 8 bits.

Stream layout::

    varint length     bytes of DEFLATE data
    length bytes      raw DEFLATE (no zlib header or checksum; the section's CRC covers it),
                      inflating to exactly the stream's symbols, one byte each
"""

from __future__ import annotations

import zlib

import numpy as np

from ..errors import FormatError
from .inflate import RAW_DEFLATE, inflate_exactly
from .varint import Reader, encode_varint

#: The largest alphabet a stream can code: symbols are bytes.
MAX_ALPHABET = 256
#: zlib's parameters for Huffman codes only.
_LEVEL = 9
_MEMORY_LEVEL = 9


def write_stream(symbols: np.ndarray) -> bytes:
    """Code ``symbols`` (integers below 256); return the stream's bytes."""
    compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, RAW_DEFLATE, _MEMORY_LEVEL, zlib.Z_HUFFMAN_ONLY)
    data = compressor.compress(np.ascontiguousarray(symbols, dtype=np.uint8)) + compressor.flush()
    return encode_varint(len(data)) + data


def read_stream(reader: Reader, alphabet_size: int, count: int, what: str) -> np.ndarray:
    """Read what :func:`write_stream` wrote: exactly ``count`` symbols below ``alphabet_size``, as uint8.

    Memory is bounded by ``count``, whatever the stream claims
    (:func:`~cmpstore.streams.inflate.inflate_exactly`).
    """
    length = reader.varint(f"{what} length", reader.remaining)
    inflated = inflate_exactly(reader.take(length, f"{what} bytes"), count, what, raw=True)
    symbols = np.frombuffer(inflated, dtype=np.uint8)
    if alphabet_size < MAX_ALPHABET and count and int(symbols.max()) >= alphabet_size:
        raise FormatError(f"{what}: symbol {int(symbols.max())} is outside the alphabet of {alphabet_size}")
    return symbols


def skip_stream(reader: Reader, what: str) -> int:
    """Step over a stream without decoding it; return its coded size in bits."""
    length = reader.varint(f"{what} length", reader.remaining)
    reader.take(length, f"{what} bytes")
    return 8 * length

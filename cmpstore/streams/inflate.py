"""zlib streams of a declared size, inflated without trusting the stream.

A hostile stream can claim anything; :func:`inflate_exactly` allocates no
more than the size its caller expects (and first checks that the stream is
long enough to inflate to it at all), then insists on exactly that size and
nothing after it.  ISA-L inflates where it is installed (zlib_backend).
"""

from __future__ import annotations

import zlib

from ..errors import FormatError
from . import zlib_backend

#: DEFLATE's best ratio is about 1032:1; the rest is headroom for zlib's framing.
_MAX_RATIO = 1032
_SLACK = 1024


def inflate_bound(compressed_bytes: int) -> int:
    """Most bytes a zlib stream of this size can inflate to."""
    return _MAX_RATIO * compressed_bytes + _SLACK


#: zlib's window bits for a raw DEFLATE stream (RFC 1951: no zlib header, no checksum).
RAW_DEFLATE = -15


def inflate_exactly(stream, size: int, what: str, *, raw: bool = False) -> bytes:
    """The ``size`` bytes the zlib ``stream`` holds (with ``raw``, raw DEFLATE); FormatError naming ``what`` else."""
    kind = "DEFLATE data" if raw else "zlib stream"
    if size > inflate_bound(len(stream)):
        raise FormatError(f"{what}: declares {size} bytes, more than its stream can inflate to ({len(stream)} bytes)")
    inflater = zlib_backend.inflater.decompressobj(RAW_DEFLATE if raw else zlib.MAX_WBITS)
    try:
        # max_length bounds memory by the declared size, whatever the stream claims.
        inflated = inflater.decompress(stream, size + 1)
    except zlib_backend.inflater.error as exc:
        raise FormatError(f"{what}: corrupt {kind} ({exc})") from None
    if len(inflated) != size or not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
        raise FormatError(f"{what}: the {kind} does not hold exactly {size} bytes")
    return inflated

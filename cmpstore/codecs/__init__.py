"""Codecs for one blob's values, and the registry that maps codec ids to them.

Each codec turns a 1-D little-endian float array into a payload and back,
bit for bit, and can describe a payload (for ``report`` and ``inspect``)
without decoding it in full.  The encoder tries every codec and keeps the
smallest payload.
"""

from __future__ import annotations

from ..errors import FormatError
from .base import BlobCodec, BlobStats, Part
from .deflate import ShuffledDeflateCodec
from .raw import RawCodec
from .segmented import SegmentedCodec
from .shuffled_ans import ShuffledAnsCodec
from .sparse import SparseAnsCodec, SparseCodec, SparseDeflateCodec

CODECS: dict[int, type[BlobCodec]] = {
    codec.codec_id: codec
    for codec in (
        RawCodec,
        ShuffledDeflateCodec,
        SparseCodec,
        SparseAnsCodec,
        ShuffledAnsCodec,
        SparseDeflateCodec,
        SegmentedCodec,
    )
}


def codec_for_id(codec_id: int) -> BlobCodec:
    """The codec that reads payloads written with ``codec_id``."""
    try:
        return CODECS[codec_id]()
    except KeyError:
        raise FormatError(f"unknown blob codec id {codec_id}") from None


__all__ = [
    "BlobCodec",
    "BlobStats",
    "CODECS",
    "Part",
    "RawCodec",
    "SegmentedCodec",
    "ShuffledAnsCodec",
    "ShuffledDeflateCodec",
    "SparseAnsCodec",
    "SparseCodec",
    "SparseDeflateCodec",
    "codec_for_id",
]

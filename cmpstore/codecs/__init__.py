"""Codecs for one blob's values, and the registry that maps codec ids to them.

Each codec turns a 1-D little-endian float array into a payload and back,
bit for bit, and can describe a payload (for ``report`` and ``inspect``)
without decoding it in full.  The encoder tries every codec and keeps the
smallest payload.  Importing this package registers every codec in
:data:`CODECS` (each class enters itself as it is defined).
"""

from __future__ import annotations

from .base import CODECS, BlobCodec, BlobStats, Part, codec_for_id
from .deflate import ShuffledDeflateCodec
from .raw import RawCodec
from .segmented import SegmentedCodec
from .shuffled_ans import ShuffledAnsCodec
from .sparse import SparseAnsCodec, SparseCodec, SparseDeflateCodec

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

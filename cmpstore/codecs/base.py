"""The interface every blob codec implements, and the statistics it reports."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import FormatError
from ..streams.codebook import bit_patterns


@dataclass
class BlobStats:
    """What a payload holds, as shown by ``report`` (one row of the paper's Table 3)."""

    codec: str
    count: int  # values in the blob
    nonzero: int | None = None
    distinct: int | None = None  # distinct nonzero values
    codebook_entries: int | None = None
    index_bits: int | None = None
    entries: int | None = None  # stored entries, fillers included
    fillers: int | None = None
    index_stream_bits: int | None = None
    weight_stream_bits: int | None = None
    # Bytes of the payload by part (sparse codec): index stream, weight stream, codebook.
    index_bytes: int = 0
    weight_bytes: int = 0
    codebook_bytes: int = 0
    note: str = ""


@dataclass(frozen=True)
class Part:
    """A run of a blob's values that decodes on its own: ``values[start : start + count]``."""

    start: int
    count: int
    codec: BlobCodec
    payload: memoryview
    what: str  # how errors name it


#: Every codec by its id: each concrete codec class enters itself as it is defined
#: (:meth:`BlobCodec.__init_subclass__`), so a codec that holds others (segmented) can
#: look them up without importing the package that imports it.
CODECS: dict[int, type[BlobCodec]] = {}


def codec_for_id(codec_id: int) -> BlobCodec:
    """The codec that reads payloads written with ``codec_id``."""
    try:
        return CODECS[codec_id]()
    except KeyError:
        raise FormatError(f"unknown blob codec id {codec_id}") from None


class BlobCodec(ABC):
    """Lossless codec for a 1-D array of ``<f2``, ``<f4`` or ``<f8`` values."""

    codec_id: int
    name: str
    #: The first ``.cmps`` format version whose files may use this codec (docs/FORMAT.md, "Versioning").
    format_version: int = 1

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        codec_id = cls.__dict__.get("codec_id")
        if codec_id is not None:
            if codec_id in CODECS:
                raise TypeError(f"codec id {codec_id} is taken by {CODECS[codec_id].__name__}")
            CODECS[codec_id] = cls

    @abstractmethod
    def encode(self, values: np.ndarray) -> bytes:
        """Payload for ``values``."""

    @abstractmethod
    def decode(self, payload, count: int, dtype: np.dtype, what: str, out: np.ndarray | None = None) -> np.ndarray:
        """The ``count`` values of ``dtype`` that ``payload`` holds; raises FormatError naming ``what``.

        With ``out`` (a writable 1-D array of ``count`` values of ``dtype``) the
        values are written into it and it is returned, as numcodecs' codecs do.
        """

    def windows(
        self, payload, count: int, dtype: np.dtype, what: str, window: int, scratch: np.ndarray | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """The values as consecutive ``(start, values)`` pieces of at most ``window`` values.

        By default one decode, sliced; a codec whose payload is smaller than
        its values (sparse) overrides it to hold only one window at a time.
        Each piece is valid until the next one is asked for.  ``scratch``, a
        uint8 array of at least ``window`` values' bytes, is memory the
        pieces may be decoded into: a streaming writer passes the same one
        for every blob, so that each does not fault in fresh pages.
        """
        if scratch is not None and count <= window:
            yield 0, self.decode(payload, count, dtype, what, out=scratch_values(scratch, count, dtype))
            return
        values = self.decode(payload, count, dtype, what)
        for start in range(0, count, window):
            yield start, values[start : start + window]

    def parts(self, payload, count: int, what: str) -> list[Part]:
        """The runs of values that decode independently of each other; the whole blob but for segmented blobs."""
        return [Part(0, count, self, payload, what)]

    def decode_entries(self, payload, count: int, dtype: np.dtype, what: str) -> tuple[np.ndarray, np.ndarray]:
        """Ascending positions (int64) and values of at least every value that is not +0.0.

        By default from a dense decode; the sparse codecs return their stored
        entries without one, fillers (+0.0) included.
        """
        values = self.decode(payload, count, dtype, what)
        positions = np.flatnonzero(bit_patterns(values))
        return positions, values[positions]

    def describe(self, payload, count: int, dtype: np.dtype, what: str) -> BlobStats:
        """Statistics of a payload; by default by decoding it."""
        values = self.decode(payload, count, dtype, what)
        return describe_values(self.name, values)


def output_for(out: np.ndarray | None, count: int, dtype: np.dtype) -> np.ndarray | None:
    """Check a caller's ``out`` buffer; a wrong one is a programming error, not bad input."""
    if out is not None and (out.shape != (count,) or out.dtype != dtype or not out.flags.writeable):
        raise ValueError(f"out must be a writable 1-D array of {count} values of {dtype}, got {out.dtype}{out.shape}")
    return out


def scratch_values(scratch: np.ndarray | None, count: int, dtype: np.dtype) -> np.ndarray | None:
    """The first ``count`` values of ``dtype`` in the uint8 ``scratch`` array (None without one)."""
    if scratch is None:
        return None
    return scratch[: count * np.dtype(dtype).itemsize].view(dtype)


def byte_planes(values: np.ndarray) -> np.ndarray:
    """The values' bytes as planes, ``(value size, count)``: byte 0 of every value, then byte 1, ...

    Grouping the sign/exponent bytes of all values apart from the mantissa
    bytes is HDF5's and Blosc's shuffle filter; the result is a view, not a copy.
    """
    return values.view(np.uint8).reshape(-1, values.dtype.itemsize).T


def describe_values(codec_name: str, values: np.ndarray) -> BlobStats:
    """Statistics of a blob stored without sparse coding."""
    patterns = bit_patterns(values)
    nonzero = patterns[patterns != 0]
    return BlobStats(
        codec=codec_name,
        count=int(values.size),
        nonzero=int(nonzero.size),
        distinct=int(np.unique(nonzero).size),
    )

"""Segmented codec: a large blob as consecutive runs of values, each coded on its own.

Why: a blob's entropy-coded streams decode one symbol after another, so one
huge blob (VGG-16's fc6 is three quarters of the model) kept a single
decode worker busy while the others had finished.  Runs of
:data:`SEGMENT_VALUES` values, each a complete payload of another codec,
let decode spread one blob over every core, and bound what decoding one
piece holds in memory.  Each run gets whichever codec codes it best, so a
blob that is sparse in one part and dense in another is stored well in both.
Format version 5.

Payload layout (varints are LEB128)::

    varint segment_values   S: values per segment, MIN_SEGMENT_VALUES .. count - 1
    for each of the ceil(count / S) segments (the last holds what remains):
        varint codec_id     any codec but this one
        varint length       bytes of the segment's payload
        payload             that codec's payload for the segment's values
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from ..errors import FormatError
from ..format_versions import Feature, first_version
from ..limits import MIN_SEGMENT_VALUES
from ..streams.codebook import bit_patterns
from ..streams.varint import Reader, encode_varint
from .base import BlobCodec, BlobStats, Part, codec_for_id, output_for

#: Values per segment that cmpstore writes: 16 MiB of float32, so VGG-16's fc6 is 25 segments.
SEGMENT_VALUES = 1 << 22
#: Largest codec id a segment may name (the ids in use are listed in cmpstore.codecs).
_MAX_CODEC_ID = 255


class SegmentedCodec(BlobCodec):
    """Runs of ``segment_values`` values, each coded by ``code_segment`` (the writer's choice of codec).

    Decoding needs neither argument: every segment names its codec.

    Examples
    --------
    >>> from cmpstore.codecs.raw import RawCodec
    >>> values = np.arange(200_000, dtype="<f4")
    >>> codec = SegmentedCodec(1 << 16, lambda run: (RawCodec(), RawCodec().encode(run)))
    >>> payload = codec.encode(values)
    >>> [(part.start, part.count) for part in codec.parts(payload, values.size, "blob")]
    [(0, 65536), (65536, 65536), (131072, 65536), (196608, 3392)]
    >>> bool((codec.decode(payload, values.size, values.dtype, "blob") == values).all())
    True
    """

    codec_id = 6
    name = "segmented"
    format_version = first_version(Feature.SEGMENTS)

    def __init__(
        self,
        segment_values: int = SEGMENT_VALUES,
        code_segment: Callable[[np.ndarray], tuple[BlobCodec, bytes]] | None = None,
    ):
        if segment_values < MIN_SEGMENT_VALUES:
            raise ValueError(f"segment_values must be at least {MIN_SEGMENT_VALUES}, got {segment_values}")
        self.segment_values = segment_values
        self.code_segment = code_segment

    def encode(self, values: np.ndarray) -> bytes:
        if self.code_segment is None:
            raise ValueError("a SegmentedCodec needs code_segment to encode")
        if values.size <= self.segment_values:
            raise ValueError(f"a blob of {values.size} values is one segment of {self.segment_values}: not segmented")
        out = [encode_varint(self.segment_values)]
        for start in range(0, values.size, self.segment_values):
            codec, body = self.code_segment(values[start : start + self.segment_values])
            if isinstance(codec, SegmentedCodec):
                raise ValueError("a segment cannot itself be segmented")
            out += [encode_varint(codec.codec_id), encode_varint(len(body)), body]
        return b"".join(out)

    def parts(self, payload, count: int, what: str) -> list[Part]:
        reader = Reader(payload)
        segment_values = reader.varint(f"{what} segment values", max(count - 1, 0))
        if segment_values < MIN_SEGMENT_VALUES:
            raise FormatError(f"{what}: segments of {segment_values} values, fewer than {MIN_SEGMENT_VALUES}")
        parts = []
        for number, start in enumerate(range(0, count, segment_values)):
            label = f"{what} segment {number}"
            codec_id = reader.varint(f"{label} codec", _MAX_CODEC_ID)
            if codec_id == self.codec_id:
                raise FormatError(f"{label}: a segment cannot itself be segmented")
            try:
                codec = codec_for_id(codec_id)
            except FormatError as exc:
                raise exc.located(where=label) from None
            length = reader.varint(f"{label} length", reader.remaining)
            parts.append(Part(start, min(segment_values, count - start), codec, reader.take(length, label), label))
        reader.expect_end(what)
        return parts

    def decode(self, payload, count: int, dtype: np.dtype, what: str, out: np.ndarray | None = None) -> np.ndarray:
        out = output_for(out, count, dtype)
        parts = self.parts(payload, count, what)
        if out is None:
            out = np.empty(count, dtype=dtype)
        for part in parts:
            part.codec.decode(part.payload, part.count, dtype, part.what, out=out[part.start : part.start + part.count])
        return out

    def windows(
        self, payload, count: int, dtype: np.dtype, what: str, window: int, scratch: np.ndarray | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        for part in self.parts(payload, count, what):
            for start, values in part.codec.windows(part.payload, part.count, dtype, part.what, window, scratch):
                yield part.start + start, values

    def decode_entries(self, payload, count: int, dtype: np.dtype, what: str) -> tuple[np.ndarray, np.ndarray]:
        positions, values = [], []
        for part in self.parts(payload, count, what):
            part_positions, part_values = part.codec.decode_entries(part.payload, part.count, dtype, part.what)
            positions.append(part_positions + part.start)
            values.append(part_values)
        return np.concatenate(positions), np.concatenate(values)

    def describe(self, payload, count: int, dtype: np.dtype, what: str) -> BlobStats:
        """The segments' statistics added up; distinct values counted over the whole blob."""
        parts = self.parts(payload, count, what)
        each = [part.codec.describe(part.payload, part.count, dtype, part.what) for part in parts]
        names = sorted({stats.codec for stats in each})
        summed = BlobStats(codec=f"{self.name} ({len(parts)} x {' + '.join(names)})", count=count)
        for field in ("nonzero", "entries", "fillers", "index_stream_bits", "weight_stream_bits"):
            known = [getattr(stats, field) for stats in each]
            setattr(summed, field, None if None in known else sum(known))
        for field in ("index_bytes", "weight_bytes", "codebook_bytes"):
            setattr(summed, field, sum(getattr(stats, field) for stats in each))
        widths = {stats.index_bits for stats in each}
        summed.index_bits = widths.pop() if len(widths) == 1 else None
        codebooks = [stats.codebook_entries for stats in each]
        summed.codebook_entries = None if None in codebooks else max(codebooks)
        _, values = self.decode_entries(payload, count, dtype, what)
        patterns = bit_patterns(values)
        summed.distinct = int(np.unique(patterns[patterns != 0]).size)
        summed.note = "; ".join(dict.fromkeys(stats.note for stats in each if stats.note))
        return summed

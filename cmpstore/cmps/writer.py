"""Writing a ``.cmps`` file: each blob coded with every codec, the smallest kept (docs/FORMAT.md)."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from .. import limits
from ..caffe.model import DATA_FIELD, LAYER_FIELD, BlobAddress, Model
from ..caffe.netproto import LayerInfo
from ..codecs import (
    BlobCodec,
    RawCodec,
    SegmentedCodec,
    ShuffledAnsCodec,
    ShuffledDeflateCodec,
    SparseAnsCodec,
    SparseCodec,
    SparseDeflateCodec,
)
from ..codecs.segmented import SEGMENT_VALUES
from ..errors import ModelError
from ..progress import silent
from . import container
from .sections import BlobHead, net_payload, version_for

#: A policy that fixes index_bits for a layer's weight blob, or returns None to choose.
IndexBitsPolicy = Callable[[LayerInfo], "int | None"]

#: The sparse codecs each ``coder`` tries; with "ans" a blob keeps Huffman where the
#: rANS model table would cost more than its gain (small blobs).
SPARSE_CODERS = {"huffman": (SparseCodec,), "ans": (SparseCodec, SparseAnsCodec)}
#: The codecs for dense floats, tried in this order (a later one must be smaller to be kept),
#: whichever ``coder``: that choice is about the sparse streams, the paper's Huffman or rANS.
DENSE_CODECS: tuple[type[BlobCodec], ...] = (ShuffledDeflateCodec, ShuffledAnsCodec)
#: Where decoding speed wins over the last bytes (unless ``smallest``): a blob keeps the payload
#: that decodes fast (zlib inflates it in C, or it is raw) when that is at most FAST_DECODE_SLACK
#: larger than its smallest.  The sparse codec with DEFLATE streams decodes several times faster
#: than canonical Huffman through Python, shuffled deflate of Huffman codes only four times faster
#: than shuffled rANS (VGG-16: +0.23% bytes; the NSFW ResNet-50, dense: +0.5%).  Sparse runs of
#: fewer than FAST_SPARSE_VALUES values keep the smallest, as do dense runs of fewer than
#: FAST_DENSE_VALUES: below that, decoding takes well under a millisecond either way.  Pruned
#: real nets are mostly layers of 2^16 to 2^20 values (ResNet-50's): there canonical Huffman
#: through Python decoded at 40 ns a symbol and made loading a pruned net slower than a dense one.
#: LeNet's fc1 is one such layer (+0.07% bytes; its 150x files keep every coding).
FAST_SPARSE_VALUES = 1 << 16
FAST_DENSE_VALUES = 1 << 14
FAST_DECODE_SLACK = 0.01


def encode_model(
    model: Model,
    index_bits: IndexBitsPolicy | None = None,
    progress=silent,
    coder: str = "huffman",
    max_version: int = container.VERSIONS[-1],
    smallest: bool = False,
) -> bytes:
    """The bytes of a ``.cmps`` file holding ``model`` (what :func:`write_model` writes, in memory)."""
    buffer = io.BytesIO()
    write_model(model, buffer, index_bits, progress, coder, max_version, smallest)
    return buffer.getvalue()


def write_model(
    model: Model,
    stream: BinaryIO,
    index_bits: IndexBitsPolicy | None = None,
    progress=silent,
    coder: str = "huffman",
    max_version: int = container.VERSIONS[-1],
    smallest: bool = False,
) -> int:
    """Write the ``.cmps`` file holding ``model`` to a seekable binary ``stream``, section by section; its size.

    Every blob is coded with each codec and the smallest payload is kept, so
    no blob ever grows beyond its raw size plus a few bytes of framing, but
    for what makes large blobs decode fast: a blob of more than
    :data:`~cmpstore.codecs.segmented.SEGMENT_VALUES` values is coded in
    segments (format version 5), so that decoding spreads it over the cores;
    and a large run keeps a payload that decodes several times faster where
    that costs at most :data:`FAST_DECODE_SLACK` more bytes (the sparse codec
    with DEFLATE streams, of version 5, shuffled deflate, or raw), unless
    ``smallest``.  The file's format version is the lowest that holds it;
    ``max_version`` keeps out the codecs of later versions, for readers that
    know only those (a model that needs a later version is a ModelError).

    Each section is written as soon as its blob is coded, so the file is
    never held whole; the header, whose version depends on the codecs the
    blobs took, is written first as the version the model itself needs and
    rewritten at the end where a codec needed a later one.

    Raises ModelError, before anything is coded, for a model that the reader
    would reject as beyond the format's limits (:mod:`cmpstore.limits`).
    """
    model.check(error=ModelError)
    needed, needs = version_for(model)
    if needed > max_version:
        raise ModelError(f"the model holds {needs}, which need format version {needed}, not {max_version}")
    choice = _Choice.for_version(coder, max_version, smallest)
    section_count = 1 + len(model.payloads)
    start = stream.tell()
    size = stream.write(container.header_bytes(section_count, needed))
    size += stream.write(_section(container.NET, net_payload(model), "the net"))
    version = needed
    for payload in sorted(model.payloads, key=lambda p: p.address):
        layer = model.layer_at[(payload.address.layer_field, payload.address.layer_index)]
        fixed_bits = index_bits(layer) if index_bits and payload.address.blob_index == 0 and layer.kind else None
        codec, body = choice.blob(payload.values, fixed_bits)
        body = BlobHead(payload.address, codec.codec_id, payload.values.size).to_bytes() + body
        version = max(version, codec.format_version)
        size += stream.write(_section(container.BLOB, body, f"{layer.label} blob {payload.address.blob_index}"))
        progress(
            f"{layer.name} blob {payload.address.blob_index}", f"{payload.values.size:,} values -> {len(body):,} B"
        )
    if version != needed:
        stream.seek(start)
        stream.write(container.header_bytes(section_count, version))
        stream.seek(start + size)
    return size


def blob_payload_bytes(values: np.ndarray, coder: str = "huffman") -> int:
    """The bytes one blob of ``values`` codes to, as :func:`encode_model` codes it (its section less framing)."""
    address = BlobAddress(LAYER_FIELD, 0, 0, DATA_FIELD)
    codec, body = _Choice.for_version(coder, container.VERSIONS[-1]).blob(values, None)
    return len(BlobHead(address, codec.codec_id, values.size).to_bytes()) + len(body)


def _section(kind: bytes, payload: bytes, where: str) -> bytes:
    # Only incompressible values within a few bytes of the blob limit get here.
    if len(payload) > limits.MAX_SECTION_BYTES:
        raise ModelError(
            f"codes to {len(payload):,} bytes, more than the {limits.MAX_SECTION_BYTES:,} a section may hold",
            where=where,
        )
    return container.section_bytes(kind, payload)


@dataclass(frozen=True)
class _Choice:
    """Which codecs a blob is coded with, and which of their payloads is kept."""

    sparse: tuple[type[SparseCodec], ...]
    dense: tuple[type[BlobCodec], ...]
    prefer_fast: bool  # keep a fast-decoding payload within FAST_DECODE_SLACK of the smallest
    fast_sparse: type[SparseCodec] | None  # the sparse codec that decodes fast, where preferred and allowed
    segment_values: int | None  # None: never segmented

    @classmethod
    def for_version(cls, coder: str, max_version: int, smallest: bool = False) -> _Choice:
        def allowed(codec) -> bool:
            return codec.format_version <= max_version

        return cls(
            sparse=SPARSE_CODERS[coder],
            dense=tuple(filter(allowed, DENSE_CODECS)),
            prefer_fast=not smallest,
            fast_sparse=SparseDeflateCodec if not smallest and allowed(SparseDeflateCodec) else None,
            segment_values=SEGMENT_VALUES if allowed(SegmentedCodec) else None,
        )

    def blob(self, values: np.ndarray, fixed_bits: int | None) -> tuple[BlobCodec, bytes]:
        """The codec and payload kept for one blob's ``values``."""
        if self.segment_values is not None and values.size > self.segment_values:
            segmented = SegmentedCodec(self.segment_values, lambda run: self._run(run, fixed_bits))
            return segmented, segmented.encode(values)
        return self._run(values, fixed_bits)

    def _run(self, values: np.ndarray, fixed_bits: int | None) -> tuple[BlobCodec, bytes]:
        """The smallest payload, or the fastest to decode within FAST_DECODE_SLACK of it (see write_model)."""
        sparse = [(codec(fixed_bits), codec(fixed_bits).encode(values)) for codec in self.sparse]
        fast = []  # fastest to decode first
        streams = self.fast_sparse
        if streams and values.size >= FAST_SPARSE_VALUES and (fixed_bits or 0) <= streams.max_index_bits:
            fast.append((streams(fixed_bits), streams(fixed_bits).encode(values)))
        dense = []
        # The dense codecs only pay on dense floats; skip them where the sparse coder already halved the blob.
        if fixed_bits is None and min(len(body) for _, body in sparse) > values.nbytes // 2:
            prefer_fast = self.prefer_fast and values.size >= FAST_DENSE_VALUES
            quick = None  # shuffled rANS with the planes it barely shrinks stored, coded with the smallest
            for codec in self.dense:
                if codec is ShuffledAnsCodec and prefer_fast:
                    smallest_body, quick_body = ShuffledAnsCodec.encode_each(values, (0.0, FAST_DECODE_SLACK))
                    dense.append((ShuffledAnsCodec(), smallest_body))
                    quick = (ShuffledAnsCodec(min_plane_saving=FAST_DECODE_SLACK), quick_body)
                else:
                    dense.append((codec(), codec().encode(values)))
            if prefer_fast:
                # zlib inflates either deflate payload; rANS with its barely-shrunk planes stored comes last.
                huffman_only = ShuffledDeflateCodec(huffman_only=True)
                fast.append((huffman_only, huffman_only.encode(values)))
                fast += [(codec, body) for codec, body in dense if isinstance(codec, ShuffledDeflateCodec)]
                if quick is not None:
                    fast.append(quick)
        smallest = min(sparse + dense, key=lambda candidate: len(candidate[1]))
        if fixed_bits is None:
            # Raw decodes fastest of all; it is only materialised when it is kept, since a copy of a
            # large blob would double peak memory.
            slack = FAST_DECODE_SLACK if self.prefer_fast and values.size >= FAST_DENSE_VALUES else 0
            if values.nbytes < len(smallest[1]) or (slack and values.nbytes <= len(smallest[1]) * (1 + slack)):
                return RawCodec(), RawCodec().encode(values)
        for codec, body in fast:
            if len(body) <= len(smallest[1]) * (1 + FAST_DECODE_SLACK):
                return codec, body
        return smallest

"""Writing a ``.cmps`` file: each blob coded with every codec, the smallest kept (docs/FORMAT.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
#: Runs of values at least this long take the sparse codec with DEFLATE streams (codec 5) where
#: its payload is at most FAST_DECODE_SLACK larger than the smallest: zlib decodes its streams in
#: C, several times faster than canonical Huffman through Python (VGG-16: +0.2% bytes), and
#: below a million values the entropy decoding takes milliseconds either way.
FAST_DECODE_VALUES = 1 << 20
FAST_DECODE_SLACK = 0.01


def encode_model(
    model: Model,
    index_bits: IndexBitsPolicy | None = None,
    progress=silent,
    coder: str = "huffman",
    max_version: int = container.VERSIONS[-1],
) -> bytes:
    """The bytes of a ``.cmps`` file holding ``model``.

    Every blob is coded with each codec and the smallest payload is kept, so
    no blob ever grows beyond its raw size plus a few bytes of framing, with
    two exceptions that make large blobs decode fast (format version 5): a
    blob of more than :data:`~cmpstore.codecs.segmented.SEGMENT_VALUES`
    values is coded in segments, each its smallest, so that decoding spreads
    it over the cores; and a run of at least :data:`FAST_DECODE_VALUES`
    values takes the sparse codec with DEFLATE streams where that is within
    :data:`FAST_DECODE_SLACK` of the smallest.  The file's format version is
    the lowest that holds it; ``max_version`` keeps out the codecs of later
    versions, for readers that know only those (a model that needs a later
    version is a ModelError), and ``max_version=4`` keeps every blob's
    smallest coding.

    Raises ModelError, before anything is coded, for a model that the reader
    would reject as beyond the format's limits (:mod:`cmpstore.limits`).
    """
    model.check(error=ModelError)
    version, needs = version_for(model)
    if version > max_version:
        raise ModelError(f"the model holds {needs}, which need format version {version}, not {max_version}")
    choice = _Choice.for_version(coder, max_version)
    sections = [_section(container.NET, net_payload(model), "the net")]
    for payload in sorted(model.payloads, key=lambda p: p.address):
        layer = model.layer_at[(payload.address.layer_field, payload.address.layer_index)]
        fixed_bits = index_bits(layer) if index_bits and payload.address.blob_index == 0 and layer.kind else None
        codec, body = choice.blob(payload.values, fixed_bits)
        body = BlobHead(payload.address, codec.codec_id, payload.values.size).to_bytes() + body
        version = max(version, codec.format_version)
        sections.append(_section(container.BLOB, body, f"{layer.label} blob {payload.address.blob_index}"))
        progress(
            f"{layer.name} blob {payload.address.blob_index}", f"{payload.values.size:,} values -> {len(body):,} B"
        )
    return container.header_bytes(len(sections), version) + b"".join(sections)


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
    fast_sparse: type[SparseCodec] | None  # preferred for large runs when nearly as small
    segment_values: int | None  # None: never segmented

    @classmethod
    def for_version(cls, coder: str, max_version: int) -> _Choice:
        def allowed(codec) -> bool:
            return codec.format_version <= max_version

        return cls(
            sparse=SPARSE_CODERS[coder],
            dense=tuple(filter(allowed, DENSE_CODECS)),
            fast_sparse=SparseDeflateCodec if allowed(SparseDeflateCodec) else None,
            segment_values=SEGMENT_VALUES if allowed(SegmentedCodec) else None,
        )

    def blob(self, values: np.ndarray, fixed_bits: int | None) -> tuple[BlobCodec, bytes]:
        """The codec and payload kept for one blob's ``values``."""
        if self.segment_values is not None and values.size > self.segment_values:
            segmented = SegmentedCodec(self.segment_values, lambda run: self._run(run, fixed_bits))
            return segmented, segmented.encode(values)
        return self._run(values, fixed_bits)

    def _run(self, values: np.ndarray, fixed_bits: int | None) -> tuple[BlobCodec, bytes]:
        codec: BlobCodec
        codec, body = min(
            ((sparse(fixed_bits), sparse(fixed_bits).encode(values)) for sparse in self.sparse),
            key=lambda candidate: len(candidate[1]),
        )
        fast = self.fast_sparse
        if fast and values.size >= FAST_DECODE_VALUES and (fixed_bits is None or fixed_bits <= fast.max_index_bits):
            coded = fast(fixed_bits).encode(values)
            if len(coded) <= len(body) * (1 + FAST_DECODE_SLACK):
                codec, body = fast(fixed_bits), coded
        if fixed_bits is None:
            # The dense codecs only pay on dense floats; skip them where the sparse coder already halved the blob.
            if len(body) > values.nbytes // 2:
                for dense in self.dense:
                    coded = dense().encode(values)
                    if len(coded) < len(body):
                        codec, body = dense(), coded
            # Raw is only materialised when it wins: a copy of a large blob would double peak memory.
            if values.nbytes < len(body):
                codec, body = RawCodec(), RawCodec().encode(values)
        return codec, body

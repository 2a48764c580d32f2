"""Writing a ``.cmps`` file: every blob coded with each codec, the smallest kept (docs/FORMAT.md)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import limits
from ..caffe.model import DATA_FIELD, LAYER_FIELD, BlobAddress, Model, Payload
from ..caffe.netproto import LayerInfo
from ..codecs import BlobCodec, RawCodec, ShuffledAnsCodec, ShuffledDeflateCodec, SparseAnsCodec, SparseCodec
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


def encode_model(
    model: Model,
    index_bits: IndexBitsPolicy | None = None,
    progress=silent,
    coder: str = "huffman",
    max_version: int = container.VERSIONS[-1],
) -> bytes:
    """The bytes of a ``.cmps`` file holding ``model``.

    Every blob is coded with each codec and the smallest payload is kept, so
    no blob ever grows beyond its raw size plus a few bytes of framing.  The
    file's format version is the lowest that holds it; ``max_version`` keeps
    out the codecs of later versions, for readers that know only those
    (a model that needs a later version is a ModelError).

    Raises ModelError, before anything is coded, for a model that the reader
    would reject as beyond the format's limits (:mod:`cmpstore.limits`).
    """
    model.check(error=ModelError)
    version, needs = version_for(model)
    if version > max_version:
        raise ModelError(f"the model holds {needs}, which need format version {version}, not {max_version}")
    dense_codecs = tuple(codec for codec in DENSE_CODECS if codec.format_version <= max_version)
    sections = [_section(container.NET, net_payload(model), "the net")]
    for payload in sorted(model.payloads, key=lambda p: p.address):
        layer = model.layer_at[(payload.address.layer_field, payload.address.layer_index)]
        fixed_bits = index_bits(layer) if index_bits and payload.address.blob_index == 0 and layer.kind else None
        codec, body = _blob_payload(payload, fixed_bits, SPARSE_CODERS[coder], dense_codecs)
        version = max(version, codec.format_version)
        sections.append(_section(container.BLOB, body, f"{layer.label} blob {payload.address.blob_index}"))
        progress(
            f"{layer.name} blob {payload.address.blob_index}", f"{payload.values.size:,} values -> {len(body):,} B"
        )
    return container.header_bytes(len(sections), version) + b"".join(sections)


def blob_payload_bytes(values: np.ndarray, coder: str = "huffman") -> int:
    """The bytes one blob of ``values`` codes to, as :func:`encode_model` codes it (its section less framing)."""
    address = BlobAddress(LAYER_FIELD, 0, 0, DATA_FIELD)
    _, body = _blob_payload(Payload(address, values), None, SPARSE_CODERS[coder], DENSE_CODECS)
    return len(body)


def _section(kind: bytes, payload: bytes, where: str) -> bytes:
    # Only incompressible values within a few bytes of the blob limit get here.
    if len(payload) > limits.MAX_SECTION_BYTES:
        raise ModelError(
            f"codes to {len(payload):,} bytes, more than the {limits.MAX_SECTION_BYTES:,} a section may hold",
            where=where,
        )
    return container.section_bytes(kind, payload)


def _blob_payload(
    payload: Payload,
    fixed_bits: int | None,
    sparse_codecs: tuple[type[SparseCodec], ...],
    dense_codecs: tuple[type[BlobCodec], ...],
) -> tuple[BlobCodec, bytes]:
    values = payload.values
    codec: BlobCodec
    codec, body = min(
        ((sparse(fixed_bits), sparse(fixed_bits).encode(values)) for sparse in sparse_codecs),
        key=lambda candidate: len(candidate[1]),
    )
    if fixed_bits is None:
        # The dense codecs only pay on dense floats; skip them where the sparse coder already halved the blob.
        if len(body) > values.nbytes // 2:
            for dense in dense_codecs:
                coded = dense().encode(values)
                if len(coded) < len(body):
                    codec, body = dense(), coded
        # Raw is only materialised when it wins: a copy of a large blob would double peak memory.
        if values.nbytes < len(body):
            codec, body = RawCodec(), RawCodec().encode(values)
    return codec, BlobHead(payload.address, codec.codec_id, values.size).to_bytes() + body

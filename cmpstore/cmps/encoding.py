"""Encode a :class:`~cmpstore.caffe.model.Model` into container sections, and decode them back.

Section payloads (varints are LEB128; see docs/FORMAT.md)::

    NETP  varint source_format   1 = binary caffemodel, 2 = Caffe HDF5
          varint skeleton_size   bytes of the skeleton once inflated
          zlib stream            the skeleton NetParameter (weights removed)

    BLOB  varint layer_field     100 = NetParameter.layer, 2 = NetParameter.layers
          varint layer_index     position in that list
          varint blob_index      position in the layer's blobs
          varint value_field     5 = BlobProto.data (float32), 8 = double_data (float64)
          varint codec_id        see cmpstore.codecs
          varint count           values in the blob
          codec payload          the rest of the section

Blob sections follow the NETP section in ascending address order.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

from ..caffe import netproto
from ..caffe.model import BLOBS_FIELD, PAYLOAD_DTYPE, BlobAddress, Model, Payload, SourceFormat
from ..caffe.netproto import LayerInfo
from ..codecs import BlobCodec, BlobStats, RawCodec, ShuffledDeflateCodec, SparseAnsCodec, SparseCodec, codec_for_id
from ..codecs.deflate import inflate_bound
from ..errors import FormatError, ModelError
from ..progress import silent
from ..streams.varint import Reader, encode_varint
from . import container

#: Largest blob the format accepts: what fits in protobuf's 2 GiB message limit.
MAX_BLOB_BYTES = 1 << 31
_MAX_SKELETON_BYTES = 1 << 31

#: A policy that fixes index_bits for a layer's weight blob, or returns None to choose.
IndexBitsPolicy = Callable[[LayerInfo], "int | None"]


@dataclass
class EncodedBlob:
    """One blob section as the encoder wrote it or the decoder found it."""

    address: BlobAddress
    layer: LayerInfo
    stats: BlobStats
    section_bytes: int


#: The sparse codecs each ``--coder`` tries; with "ans" a blob keeps Huffman where the
#: rANS model table would cost more than its gain (small blobs).
SPARSE_CODERS = {"huffman": (SparseCodec,), "ans": (SparseCodec, SparseAnsCodec)}


def encode_model(
    model: Model, index_bits: IndexBitsPolicy | None = None, progress=silent, coder: str = "huffman"
) -> bytes:
    """Encode a model into the bytes of a ``.cmps`` file.

    Every blob is coded with each codec and the smallest payload is kept, so
    no blob ever grows beyond its raw size plus a few bytes of framing.
    """
    net = netproto.parse_skeleton(model.skeleton)
    layers = netproto.layers_by_address(netproto.layer_infos(net))
    sections = [container.section_bytes(container.NET, _net_payload(model))]
    for payload in sorted(model.payloads, key=lambda p: p.address):
        layer = layers[(payload.address.layer_field, payload.address.layer_index)]
        fixed_bits = index_bits(layer) if index_bits and payload.address.blob_index == 0 and layer.kind else None
        body = _blob_payload(payload, fixed_bits, SPARSE_CODERS[coder])
        sections.append(container.section_bytes(container.BLOB, body))
        label = f"{layer.name} blob {payload.address.blob_index}"
        progress(label, f"{payload.values.size:,} values -> {len(body):,} B")
    return container.header_bytes(len(sections)) + b"".join(sections)


def _net_payload(model: Model) -> bytes:
    return (
        encode_varint(int(model.source_format)) + encode_varint(len(model.skeleton)) + zlib.compress(model.skeleton, 9)
    )


def _blob_payload(payload: Payload, fixed_bits: int | None, sparse_codecs: tuple[type[SparseCodec], ...]) -> bytes:
    values = payload.values
    codec: BlobCodec
    codec, body = min(
        ((sparse(fixed_bits), sparse(fixed_bits).encode(values)) for sparse in sparse_codecs),
        key=lambda candidate: len(candidate[1]),
    )
    if fixed_bits is None:
        # Deflate only pays on dense floats; skip it where the sparse coder already halved the blob.
        if len(body) > values.nbytes // 2:
            deflated = ShuffledDeflateCodec().encode(values)
            if len(deflated) < len(body):
                codec, body = ShuffledDeflateCodec(), deflated
        # Raw is only materialised when it wins: a copy of a large blob would double peak memory.
        if values.nbytes < len(body):
            codec, body = RawCodec(), RawCodec().encode(values)
    address = payload.address
    head = b"".join(
        encode_varint(v)
        for v in (
            address.layer_field,
            address.layer_index,
            address.blob_index,
            address.value_field,
            codec.codec_id,
            values.size,
        )
    )
    return head + body


@dataclass
class DecodedSections:
    """A container's contents after validation, before blob payloads are decoded."""

    source_format: SourceFormat
    skeleton: bytes
    net: netproto.NetParameter
    header_and_net_bytes: int
    blobs: list[tuple[BlobAddress, LayerInfo, int, int, memoryview, int]]  # address, layer, codec, count, body, size


def read_container(buf) -> DecodedSections:
    """Validate the container and the NETP section; locate every blob payload."""
    sections = container.read_sections(buf)
    if not sections or sections[0].kind != container.NET:
        raise FormatError("the first section must be the net (NETP)")
    net_section = sections[0]
    source_format, skeleton = _read_net(net_section.payload, net_section.label(0))
    try:
        net = netproto.parse_skeleton(skeleton)
    except ModelError as exc:
        raise FormatError(f"{net_section.label(0)}: {exc.problem}") from None
    layers = netproto.layers_by_address(netproto.layer_infos(net))
    blobs = []
    previous = None
    for number, section in enumerate(sections[1:], start=1):
        label = section.label(number)
        if section.kind != container.BLOB:
            raise FormatError(f"{label}: only one NETP section may appear, and first")
        reader = Reader(section.payload)
        address = BlobAddress(
            reader.varint(f"{label} layer field", max(BLOBS_FIELD)),
            reader.varint(f"{label} layer index", 1 << 31),
            reader.varint(f"{label} blob index", 1 << 31),
            reader.varint(f"{label} value field", max(PAYLOAD_DTYPE)),
        )
        layer = layers.get((address.layer_field, address.layer_index))
        if layer is None or address.blob_index >= len(layer.blob_shapes) or address.value_field not in PAYLOAD_DTYPE:
            raise FormatError(f"{label}: refers to a blob the net does not have ({address})")
        if previous is not None and address <= previous:
            raise FormatError(f"{label}: blob sections out of order or repeated")
        previous = address
        where = f"{label}, {layer.label} blob {address.blob_index}"
        codec_id = reader.varint(f"{where} codec", 255)
        dtype = PAYLOAD_DTYPE[address.value_field]
        count = reader.varint(f"{where} value count", MAX_BLOB_BYTES // dtype.itemsize)
        expected = netproto.element_count(layer.blob_shapes[address.blob_index])
        if expected is None:
            raise FormatError(f"{where}: the net gives this blob a negative dimension")
        if count != expected:
            raise FormatError(f"{where}: holds {count} values but its shape needs {expected}")
        codec_for_id(codec_id)  # rejects unknown ids before any decoding
        body = section.payload[reader.pos :]
        blobs.append((address, layer, codec_id, count, body, section.size_on_disk))
    return DecodedSections(
        SourceFormat(source_format),
        skeleton,
        net,
        container.HEADER_SIZE + net_section.size_on_disk,
        blobs,
    )


def decode_model(buf, progress=silent) -> Model:
    """Decode the bytes of a ``.cmps`` file into a model, bit for bit."""
    contents = read_container(buf)
    payloads = []
    for address, layer, codec_id, count, body, _ in contents.blobs:
        where = f"{layer.label} blob {address.blob_index}"
        codec = codec_for_id(codec_id)
        values = codec.decode(body, count, PAYLOAD_DTYPE[address.value_field], where)
        payloads.append(Payload(address, values))
        progress(f"{layer.name} blob {address.blob_index}", f"{codec.name}, {count:,} values")
    return Model(contents.skeleton, payloads, contents.source_format)


def describe_blobs(contents: DecodedSections) -> list[EncodedBlob]:
    """Statistics of every blob section, from headers where the codec allows."""
    described = []
    for address, layer, codec_id, count, body, size in contents.blobs:
        where = f"{layer.label} blob {address.blob_index}"
        stats = codec_for_id(codec_id).describe(body, count, PAYLOAD_DTYPE[address.value_field], where)
        described.append(EncodedBlob(address, layer, stats, size))
    return described


def _read_net(payload, label: str) -> tuple[int, bytes]:
    reader = Reader(payload)
    source_format = reader.varint(f"{label} source format", max(SourceFormat))
    if source_format not in set(SourceFormat):
        raise FormatError(f"{label}: unknown source format {source_format}")
    size = reader.varint(f"{label} skeleton size", _MAX_SKELETON_BYTES)
    if size > inflate_bound(reader.remaining):
        raise FormatError(f"{label}: declares a {size}-byte skeleton, more than its stream can inflate to")
    inflater = zlib.decompressobj()
    try:
        skeleton = inflater.decompress(payload[reader.pos :], size + 1)
    except zlib.error as exc:
        raise FormatError(f"{label}: corrupt skeleton stream ({exc})") from None
    if len(skeleton) != size or not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
        raise FormatError(f"{label}: skeleton stream does not hold exactly {size} bytes")
    return source_format, skeleton

"""What the two kinds of section hold at their head (docs/FORMAT.md, "`NETP`: ..." and "`BLOB`: ...").

The writer and the reader share these functions, so the schema is written
down once: the NETP payload (source format, skeleton size, zlib'd skeleton)
and the head of every BLOB payload (where the blob goes, its codec, its
value count), each checked against the format's limits as it is read.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from .. import limits
from ..caffe import netproto
from ..caffe.model import (
    BLOBS_FIELD,
    DATA_FIELD,
    DOUBLE_DATA_FIELD,
    RAW_DATA_DTYPE,
    RAW_DATA_FIELD,
    RAW_DATA_TYPE_FLOAT16,
    RAW_DATA_TYPE_NAMES,
    VALUE_FIELD_NAMES,
    VALUE_FIELDS,
    BlobAddress,
    Model,
    SourceFormat,
)
from ..errors import FormatError
from ..format_versions import Feature, first_version
from ..streams.inflate import inflate_exactly
from ..streams.varint import Reader, encode_varint

#: Largest codec id a BLOB head may carry (the ids in use are listed in cmpstore.codecs).
MAX_CODEC_ID = 255
#: The first format version in which each BLOB value field may appear (cmpstore.format_versions).
VALUE_FIELD_VERSIONS = {DATA_FIELD: 1, DOUBLE_DATA_FIELD: 1, RAW_DATA_FIELD: first_version(Feature.FLOAT16_RAW_DATA)}
#: The first version whose BLOB sections hold the raw_data of FLOAT and DOUBLE blobs (version 2 and
#: 3 took out FLOAT16 raw_data only, and left the other float types in the skeleton as bytes).
FLOAT_RAW_DATA_VERSION = first_version(Feature.FLOAT_RAW_DATA)


def raw_types_taken_out(version: int) -> tuple[int, ...]:
    """The ``raw_data_type`` values whose ``raw_data`` a file of ``version`` holds as BLOB sections."""
    if version >= FLOAT_RAW_DATA_VERSION:
        return tuple(RAW_DATA_DTYPE)
    return (RAW_DATA_TYPE_FLOAT16,) if version >= VALUE_FIELD_VERSIONS[RAW_DATA_FIELD] else ()


def value_field_version(layer: netproto.LayerInfo, address: BlobAddress) -> tuple[int, str]:
    """The first format version that holds the values at ``address``, and what they are."""
    if address.value_field != RAW_DATA_FIELD:
        return VALUE_FIELD_VERSIONS[address.value_field], VALUE_FIELD_NAMES[address.value_field]
    raw_type = layer.raw_data_types[address.blob_index]
    if raw_type == RAW_DATA_TYPE_FLOAT16:
        return VALUE_FIELD_VERSIONS[RAW_DATA_FIELD], "float16 raw_data blobs"
    return FLOAT_RAW_DATA_VERSION, f"{RAW_DATA_TYPE_NAMES.get(raw_type, raw_type)} raw_data blobs"


#: The first version whose skeleton may hold fields that do not parse as caffe.proto declares them
#: (cmpstore.caffe.netproto.parse_skeleton); a version 1 reader refuses such a skeleton.
OPAQUE_FIELDS_VERSION = first_version(Feature.OPAQUE_FIELDS)


def version_for(model: Model) -> tuple[int, str]:
    """The lowest format version that holds ``model``'s value fields and skeleton, and what needs it."""
    version, reason = 1, "every model"
    for payload in model.payloads:
        layer = model.layer_at[(payload.address.layer_field, payload.address.layer_index)]
        needed, what = value_field_version(layer, payload.address)
        if needed > version:
            version, reason = needed, what
    if OPAQUE_FIELDS_VERSION > version and netproto.conflicting_fields(model.skeleton):
        version, reason = OPAQUE_FIELDS_VERSION, "fields that do not parse as caffe.proto declares them"
    return version, reason


def net_payload(model: Model) -> bytes:
    skeleton = model.skeleton
    return encode_varint(int(model.source_format)) + encode_varint(len(skeleton)) + zlib.compress(skeleton, 9)


def read_net(payload, label: str, max_output_bytes: int | None = None) -> tuple[SourceFormat, bytes]:
    """The source format and the skeleton of a NETP payload.

    The skeleton's declared size is checked against the caller's ``max_output_bytes``
    before it is inflated: the skeleton is part of what decoding writes.
    """
    reader = Reader(payload)
    source_format = reader.varint(f"{label} source format", max(SourceFormat))
    if source_format not in set(SourceFormat):
        raise FormatError(f"{label}: unknown source format {source_format}")
    size = reader.varint(f"{label} skeleton size", limits.MAX_SKELETON_BYTES)
    limits.check_output(size, FormatError, max_output_bytes, f"{label}: the net alone decodes to")
    skeleton = inflate_exactly(payload[reader.pos :], size, f"{label} skeleton")
    return SourceFormat(source_format), skeleton


@dataclass(frozen=True)
class BlobHead:
    """The head of a BLOB payload; the codec's payload follows it."""

    address: BlobAddress
    codec_id: int
    count: int

    def to_bytes(self) -> bytes:
        address = self.address
        fields = (address.layer_field, address.layer_index, address.blob_index, address.value_field)
        return b"".join(encode_varint(value) for value in (*fields, self.codec_id, self.count))


def read_blob_address(reader: Reader, label: str) -> BlobAddress:
    """The first four fields of a BLOB head: where the blob goes (checked against the net by the reader)."""
    return BlobAddress(
        reader.varint(f"{label} layer field", max(BLOBS_FIELD)),
        reader.varint(f"{label} layer index", 1 << 31),
        reader.varint(f"{label} blob index", 1 << 31),
        reader.varint(f"{label} value field", max(VALUE_FIELDS)),
    )


def read_codec_and_count(reader: Reader, itemsize: int, where: str) -> tuple[int, int]:
    """The rest of a BLOB head; the count is bounded by the format's limit for values of ``itemsize`` bytes."""
    codec_id = reader.varint(f"{where} codec", MAX_CODEC_ID)
    count = reader.varint(f"{where} value count", limits.MAX_BLOB_BYTES // itemsize)
    return codec_id, count

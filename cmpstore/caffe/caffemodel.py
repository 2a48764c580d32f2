"""Binary ``.caffemodel`` files: split into skeleton and payloads, and join back.

The packed float fields, and the ``raw_data`` of FLOAT16, FLOAT and DOUBLE blobs, are located by
walking the protobuf wire format and reach numpy as zero-copy views of the
file's bytes; protobuf itself only ever sees the small skeleton.  Joining inserts each payload into its BlobProto in
field-number order, which is where Caffe's own serializer puts it, so a file
written by Caffe comes back byte for byte.
"""

from __future__ import annotations

import numpy as np

from .. import limits
from ..errors import ModelError
from . import wire
from .fields import (
    BLOBS_FIELD,
    DATA_FIELD,
    DOUBLE_DATA_FIELD,
    LAYER_FIELD,
    LEGACY_LAYER_FIELD,
    PAYLOAD_DTYPE,
    RAW_DATA_DTYPE,
    RAW_DATA_FIELD,
    RAW_DATA_TYPE_FIELD,
    RAW_DATA_TYPE_NAMES,
    VALUE_FIELDS,
    BlobAddress,
    Payload,
)
from .model import Model, SourceFormat

#: Tag byte of one unpacked element, and the stride of a run of them.
_UNPACKED_TAG = {
    DATA_FIELD: (wire.encode_tag(DATA_FIELD, wire.FIXED32)[0], 5),
    DOUBLE_DATA_FIELD: (wire.encode_tag(DOUBLE_DATA_FIELD, wire.FIXED64)[0], 9),
}
_PACKED_TYPE = wire.LENGTH_DELIMITED
_UNPACKED_TYPE = {DATA_FIELD: wire.FIXED32, DOUBLE_DATA_FIELD: wire.FIXED64}


def split_caffemodel(buf: bytes, path: str = "<bytes>") -> Model:
    """Split the bytes of a binary caffemodel into skeleton and payloads.

    Raises
    ------
    ModelError
        If the bytes are not a well-formed NetParameter with at least one layer.
    """
    view = np.frombuffer(buf, dtype=np.uint8)
    payloads: list[Payload] = []
    skeleton: list[bytes] = []
    layer_counts = {LAYER_FIELD: 0, LEGACY_LAYER_FIELD: 0}
    try:
        for field in wire.iter_fields(buf, 0, len(buf)):
            if field.number in BLOBS_FIELD and field.wire_type == wire.LENGTH_DELIMITED:
                layer_index = layer_counts[field.number]
                layer_counts[field.number] += 1
                if sum(layer_counts.values()) > limits.MAX_LAYERS:  # before walking millions of hostile layers
                    raise ModelError(f"the net has more than {limits.MAX_LAYERS:,} layers, the limit", path=path)
                content = _strip_layer(buf, view, field, layer_index, payloads)
                skeleton += [wire.length_delimited(field.number, len(content)), content]
            else:
                skeleton.append(buf[field.start : field.end])
    except wire.WireError as exc:
        raise ModelError(f"not a valid binary caffemodel ({exc})", path=path) from None
    except _BlobError as exc:
        raise ModelError(str(exc), path=path, where=exc.where) from None
    if not any(layer_counts.values()):
        raise ModelError("no layers found: not a binary caffemodel, or an empty net", path=path)
    return Model(b"".join(skeleton), payloads, SourceFormat.CAFFEMODEL)


def join_caffemodel(model: Model) -> list:
    """The chunks (bytes and arrays) whose concatenation is the binary caffemodel."""
    by_address = model.payload_map()
    buf = model.skeleton
    chunks: list = []
    layer_counts = {LAYER_FIELD: 0, LEGACY_LAYER_FIELD: 0}
    for field in wire.iter_fields(buf, 0, len(buf)):
        if field.number in BLOBS_FIELD and field.wire_type == wire.LENGTH_DELIMITED:
            layer_index = layer_counts[field.number]
            layer_counts[field.number] += 1
            content = _join_layer(buf, field, layer_index, by_address)
            chunks.append(wire.length_delimited(field.number, _size(content)))
            chunks += content
        else:
            chunks.append(buf[field.start : field.end])
    return chunks


def caffemodel_bytes(model: Model) -> bytes:
    """The binary caffemodel as one bytes object (for tests and small models)."""
    return b"".join(bytes(memoryview(chunk).cast("B")) for chunk in join_caffemodel(model))


def caffemodel_size(skeleton: bytes, payload_bytes: dict[BlobAddress, int]) -> int:
    """Size of the binary caffemodel that joining payloads of these sizes gives, without the payloads."""
    return sum(size for _, size, _ in caffemodel_layout(skeleton, payload_bytes))


def caffemodel_layout(
    skeleton: bytes, payload_bytes: dict[BlobAddress, int]
) -> list[tuple[int, int, bytes | BlobAddress]]:
    """Where everything goes in the binary caffemodel: ``(offset, size, bytes or payload address)`` in file order.

    Lets a writer put each payload at its place without holding the others.
    """
    sized = [Payload(address, _Sized(address, nbytes)) for address, nbytes in payload_bytes.items()]
    layout = []
    offset = 0
    for chunk in join_caffemodel(Model(skeleton, sized)):
        if isinstance(chunk, _Sized):
            layout.append((offset, chunk.nbytes, chunk.address))
            offset += chunk.nbytes
        else:
            layout.append((offset, len(chunk), bytes(chunk)))
            offset += len(chunk)
    return layout


class _Sized:
    """Stands in for a payload array where only its size matters."""

    def __init__(self, address: BlobAddress, nbytes: int):
        self.address = address
        self.nbytes = nbytes


class _BlobError(Exception):
    def __init__(self, problem: str, where: str):
        super().__init__(problem)
        self.where = where


def with_raw_values_taken_out(model: Model) -> Model:
    """``model`` with any float ``raw_data`` still in its skeleton taken out as payloads.

    ``.cmps`` files before format version 4 took out only FLOAT16
    ``raw_data`` and kept FLOAT and DOUBLE ``raw_data`` in the skeleton as
    bytes, where no comparison or numpy output saw them.  A model that holds
    anything else in its skeleton (an empty value field) is returned as it is.
    """
    if not any(
        blob.HasField("raw_data_type") and blob.raw_data_type in RAW_DATA_DTYPE and blob.raw_data
        for layers in (model.net.layer, model.net.layers)
        for layer in layers
        for blob in layer.blobs
    ):
        return model
    lifted = split_caffemodel(model.skeleton)
    if any(payload.address.value_field != RAW_DATA_FIELD for payload in lifted.payloads):
        return model
    payloads = sorted([*model.payloads, *lifted.payloads], key=lambda payload: payload.address)
    return Model(lifted.skeleton, payloads, model.source_format)


def _strip_layer(buf, view, layer: wire.Field, layer_index: int, payloads: list[Payload]) -> bytes:
    blobs_field = BLOBS_FIELD[layer.number]
    kept: list[bytes] = []
    blob_index = 0
    for field in wire.iter_fields(buf, layer.value_start, layer.end):
        if field.number == blobs_field and field.wire_type == wire.LENGTH_DELIMITED:
            address = (layer.number, layer_index, blob_index)
            content = _strip_blob(buf, view, field, address, payloads)
            kept += [wire.length_delimited(field.number, len(content)), content]
            blob_index += 1
        else:
            kept.append(buf[field.start : field.end])
    return b"".join(kept)


def _strip_blob(buf, view, blob: wire.Field, address: tuple, payloads: list[Payload]) -> bytes:
    kept: list[bytes] = []
    pieces: dict[int, list[np.ndarray]] = {DATA_FIELD: [], DOUBLE_DATA_FIELD: []}
    raw_data: list[tuple[int, wire.Field]] = []  # (place in kept, field): taken out once the type is known
    raw_data_type = None
    pos, end = blob.value_start, blob.end
    while pos < end:
        field = wire.read_field(buf, pos, end)
        number = field.number
        if number in pieces and field.wire_type == _PACKED_TYPE:
            pieces[number].append(_packed_values(buf, field, PAYLOAD_DTYPE[number], address))
            pos = field.end
        elif number in pieces and field.wire_type == _UNPACKED_TYPE[number]:
            values, pos = _unpacked_run(view, pos, end, number)
            pieces[number].append(values)
        else:
            if number == RAW_DATA_FIELD and field.wire_type == wire.LENGTH_DELIMITED:
                raw_data.append((len(kept), field))
            elif number == RAW_DATA_TYPE_FIELD and field.wire_type == wire.VARINT:
                raw_data_type = wire.read_varint(buf, field.value_start, field.end)[0]  # the last one counts
            kept.append(buf[field.start : field.end])
            pos = field.end
    for number, arrays in pieces.items():
        if arrays:
            values = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            payloads.append(Payload(BlobAddress(*address, number), values))
    if raw_data and raw_data_type in RAW_DATA_DTYPE:
        if len(raw_data) > 1:
            # raw_data is one bytes value, not a repeated field: protobuf keeps only the last.
            raise _BlobError(
                f"{RAW_DATA_TYPE_NAMES[raw_data_type]} raw_data (field {RAW_DATA_FIELD}) appears "
                f"{len(raw_data)} times; a blob holds one",
                _where(address),
            )
        place, field = raw_data[0]
        kept[place] = b""
        values = _packed_values(buf, field, RAW_DATA_DTYPE[raw_data_type], address)
        payloads.append(Payload(BlobAddress(*address, RAW_DATA_FIELD), values))
    return b"".join(kept)


def _packed_values(buf, field: wire.Field, dtype: np.dtype, address: tuple) -> np.ndarray:
    """The values of a length-delimited field, a zero-copy view of ``buf``."""
    length = field.end - field.value_start
    if length % dtype.itemsize:
        raise _BlobError(
            f"field {field.number} holds {length} bytes, not a whole number of {dtype.itemsize}-byte values",
            _where(address),
        )
    return np.frombuffer(buf, dtype=dtype, count=length // dtype.itemsize, offset=field.value_start)


def _unpacked_run(view: np.ndarray, pos: int, end: int, number: int) -> tuple[np.ndarray, int]:
    """Read consecutive unpacked elements of a repeated float/double field in one step."""
    tag, stride = _UNPACKED_TAG[number]
    whole = (end - pos) // stride
    tags = view[pos : pos + whole * stride : stride]
    mismatches = np.flatnonzero(tags != tag)
    count = int(mismatches[0]) if mismatches.size else whole
    if count == 0:  # a lone element cut short by the end of the message
        raise wire.WireError(f"field {number} at byte {pos} runs past the end of its message")
    records = view[pos : pos + count * stride].reshape(count, stride)[:, 1:]
    values = np.ascontiguousarray(records).view(PAYLOAD_DTYPE[number]).reshape(count)
    return values, pos + count * stride


def _join_layer(buf, layer: wire.Field, layer_index: int, by_address: dict) -> list:
    blobs_field = BLOBS_FIELD[layer.number]
    chunks: list = []
    blob_index = 0
    for field in wire.iter_fields(buf, layer.value_start, layer.end):
        if field.number == blobs_field and field.wire_type == wire.LENGTH_DELIMITED:
            content = _join_blob(buf, field, (layer.number, layer_index, blob_index), by_address)
            chunks.append(wire.length_delimited(field.number, _size(content)))
            chunks += content
            blob_index += 1
        else:
            chunks.append(buf[field.start : field.end])
    return chunks


def _join_blob(buf, blob: wire.Field, address: tuple, by_address: dict) -> list:
    pending = [
        (number, by_address[BlobAddress(*address, number)])
        for number in VALUE_FIELDS
        if BlobAddress(*address, number) in by_address
    ]
    chunks: list = []
    for field in wire.iter_fields(buf, blob.value_start, blob.end):
        # Caffe serializes fields in number order: payloads go before the first higher field.
        while pending and pending[0][0] < field.number:
            chunks += _packed(*pending.pop(0))
        chunks.append(buf[field.start : field.end])
    for number, values in pending:
        chunks += _packed(number, values)
    return chunks


def _packed(number: int, values) -> list:
    # Written even when empty: a payload stands for a field the skeleton's source had, and an
    # empty packed field is still a field (Caffe writes none, so its files never have one).
    # raw_data is a bytes field: the same tag, length and little-endian values.
    return [wire.length_delimited(number, values.nbytes), values]


def _size(chunks: list) -> int:
    return sum(len(chunk) if isinstance(chunk, bytes) else chunk.nbytes for chunk in chunks)


def _where(address: tuple) -> str:
    layer_field, layer_index, blob_index = address
    kind = "layer" if layer_field == LAYER_FIELD else "layers"
    return f"{kind}[{layer_index}] blob {blob_index}"

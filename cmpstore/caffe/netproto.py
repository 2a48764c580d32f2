"""Everything that touches Caffe's protobuf schema.

This is the only module that imports the generated ``caffe_pb2``.  It parses
the weightless skeleton of a net (see :mod:`cmpstore.caffe.model`), describes its
layers, rewrites Cmp layers for stock Caffe, and reads prototxt files.

Forks reuse field numbers: CaffeOnSpark's ``LayerParameter.source_class = 141``
is a string where caffe.proto has ``bias_param = 141``, a message.  Protobuf
refuses the whole net over such a field ("Wire format was corrupt").  The
skeleton keeps it byte for byte anyway; only the parsed view leaves it out
(:func:`parse_skeleton`), unless it is a field cmpstore reads (a layer's blobs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from google.protobuf import descriptor, message, text_format

from ..errors import ModelError
from . import wire
from ._proto import caffe_pb2
from .checker import check_net_size
from .fields import (
    BLOBS_FIELD,
    LAYER_FIELD,
    LEGACY_LAYER_FIELD,
    value_dtype,
)

NetParameter = caffe_pb2.NetParameter
SolverParameter = caffe_pb2.SolverParameter
Phase = caffe_pb2.Phase

#: Layer types whose first blob is a weight matrix that pruning and quantization target.
CONV_TYPES = frozenset({"Convolution", "Deconvolution", "CmpConvolution"})
FC_TYPES = frozenset({"InnerProduct", "CmpInnerProduct"})
#: The DeepCompression-caffe fork's layer types and their stock counterparts.
CMP_TO_STOCK = {"CmpConvolution": "Convolution", "CmpInnerProduct": "InnerProduct"}
_CMP_FIELDS = ("sparse_ratio", "class_num", "quantize_term")
#: Legacy V1 layer types that carry weight matrices, named as in current Caffe.
_V1_TYPE_NAMES = {"CONVOLUTION": "Convolution", "DECONVOLUTION": "Deconvolution", "INNER_PRODUCT": "InnerProduct"}


@dataclass(frozen=True)
class LayerInfo:
    """What cmpstore needs to know of one layer."""

    layer_field: int  # LAYER_FIELD or LEGACY_LAYER_FIELD
    index: int
    name: str
    type: str
    blob_shapes: tuple[tuple[int, ...], ...]
    raw_data_types: tuple[int | None, ...] = ()  # per blob: its raw_data_type where set, else None

    def value_dtype(self, blob_index: int, value_field: int) -> np.dtype | None:
        """The dtype of ``value_field``'s values in blob ``blob_index`` (:func:`cmpstore.caffe.model.value_dtype`)."""
        raw_type = self.raw_data_types[blob_index] if blob_index < len(self.raw_data_types) else None
        return value_dtype(value_field, raw_type)

    @property
    def kind(self) -> str:
        """``"conv"``, ``"fc"`` or ``""``: the shorthand used by layer selectors."""
        if self.type in CONV_TYPES:
            return "conv"
        if self.type in FC_TYPES:
            return "fc"
        return ""

    @property
    def label(self) -> str:
        return f"layer '{self.name}'" if self.name else f"layer #{self.index}"


def parse_skeleton(skeleton: bytes, path: str | None = None) -> NetParameter:
    """Parse a serialized NetParameter (with or without its weights), within the limits of its size.

    The layers and fields are counted on the wire first (:func:`check_net_size`),
    because protobuf's own parse costs memory per message before anything can be
    checked.  A field whose bytes do not parse as the type caffe.proto gives its
    number (see the module docstring) is left out of the parsed net; the
    skeleton keeps it.  Raises ModelError naming the layer and the field where
    that field is one cmpstore reads: a layer's blobs.
    """
    return parse_skeleton_and_conflicts(skeleton, path)[0]


def parse_skeleton_and_conflicts(skeleton: bytes, path: str | None = None) -> tuple[NetParameter, list[str]]:
    """:func:`parse_skeleton`, and the fields it left out, e.g. ``"layer 'data' (#0) field 141 holds ..."``."""
    check_net_size(skeleton, path)
    net = NetParameter()
    conflicts: list[str] = []
    try:
        consumed = net.ParseFromString(skeleton)
    except message.DecodeError as exc:
        skeleton, conflicts = _without_conflicts(skeleton, path, exc)
        net = NetParameter()
        try:
            consumed = net.ParseFromString(skeleton)
        except message.DecodeError:  # each field parses alone, so this is not expected
            raise ModelError(f"not a valid Caffe NetParameter ({exc})", path=path) from None
    if consumed != len(skeleton):
        raise ModelError("NetParameter was not parsed to its end", path=path)
    return net, conflicts


def conflicting_fields(skeleton: bytes, path: str | None = None) -> list[str]:
    """The fields :func:`parse_skeleton` leaves out."""
    return parse_skeleton_and_conflicts(skeleton, path)[1]


def _without_conflicts(skeleton: bytes, path: str | None, error: message.DecodeError) -> tuple[bytes, list[str]]:
    """The skeleton without its fields that do not parse as caffe.proto declares them; those fields, described.

    Each field of the net, and of each layer, is parsed on its own to find them.
    """
    kept: list[bytes] = []
    conflicts: list[str] = []
    layer_counts = {LAYER_FIELD: 0, LEGACY_LAYER_FIELD: 0}
    try:
        for field in wire.iter_fields(skeleton, 0, len(skeleton)):
            piece = skeleton[field.start : field.end]
            if field.number in layer_counts and field.wire_type == wire.LENGTH_DELIMITED:
                index = layer_counts[field.number]
                layer_counts[field.number] += 1
                content = _layer_without_conflicts(skeleton, field, index, conflicts)
                kept += [wire.length_delimited(field.number, len(content)), content]
            elif _parses(NetParameter, piece):
                kept.append(piece)
            else:
                conflicts.append(f"net {_describe(NetParameter, field)}")
    except wire.WireError as exc:
        raise ModelError(f"not a valid Caffe NetParameter ({error}: {exc})", path=path) from None
    except _BlobConflict as exc:
        raise ModelError(str(exc), path=path, where=exc.where) from None
    return b"".join(kept), conflicts


_LAYER_CLASSES = {LAYER_FIELD: caffe_pb2.LayerParameter, LEGACY_LAYER_FIELD: caffe_pb2.V1LayerParameter}


class _BlobConflict(Exception):
    def __init__(self, problem: str, where: str):
        super().__init__(problem)
        self.where = where


def _layer_without_conflicts(buf, layer: wire.Field, index: int, conflicts: list[str]) -> bytes:
    layer_class = _LAYER_CLASSES[layer.number]
    kept: list[bytes] = []
    dropped: list[wire.Field] = []
    blob_index = 0
    for field in wire.iter_fields(buf, layer.value_start, layer.end):
        piece = buf[field.start : field.end]
        is_blob = field.number == BLOBS_FIELD[layer.number] and field.wire_type == wire.LENGTH_DELIMITED
        if _parses(layer_class, piece):
            kept.append(piece)
        elif is_blob:
            # cmpstore reads blob shapes to check and place every payload: such a blob cannot stay opaque.
            where = f"{_layer_label(layer_class, kept, index)} blob {blob_index}"
            blob_fields = wire.iter_fields(buf, field.value_start, field.end)
            culprit = next((f for f in blob_fields if not _parses(caffe_pb2.BlobProto, buf[f.start : f.end])), None)
            described = _describe(caffe_pb2.BlobProto, culprit) if culprit else _describe(layer_class, field)
            raise _BlobConflict(f"{described}; cmpstore reads every blob with caffe.proto", where)
        else:
            dropped.append(field)
        blob_index += is_blob
    label = _layer_label(layer_class, kept, index)
    conflicts += [f"{label} {_describe(layer_class, field)}" for field in dropped]
    return b"".join(kept)


def _layer_label(layer_class, fields: list[bytes], index: int) -> str:
    """``"layer 'data' (#0)"``, the name read from the layer's fields that parse."""
    try:
        name = layer_class.FromString(b"".join(fields)).name
    except message.DecodeError:  # each field parses alone; together they are not expected to fail
        name = ""
    return f"layer '{name}' (#{index})" if name else f"layer #{index}"


def _parses(message_class, piece) -> bool:
    try:
        message_class.FromString(piece)
    except message.DecodeError:
        return False
    return True


_WIRE_TYPE_NAMES = {
    wire.VARINT: "a varint",
    wire.FIXED64: "8 fixed bytes",
    wire.LENGTH_DELIMITED: "length-delimited bytes",
    wire.START_GROUP: "a group",
    wire.FIXED32: "4 fixed bytes",
}
_SCALAR_TYPE_NAMES = {
    getattr(descriptor.FieldDescriptor, name): name.removeprefix("TYPE_").lower()
    for name in dir(descriptor.FieldDescriptor)
    if name.startswith("TYPE_")
}


def _describe(message_class, field: wire.Field) -> str:
    """E.g. ``"field 141 holds length-delimited bytes that do not parse as caffe.proto's bias_param
    (a caffe.BiasParameter)"``: the number, what the file holds and what caffe.proto expects."""
    found = _WIRE_TYPE_NAMES.get(field.wire_type, f"wire type {field.wire_type}")
    declared = message_class.DESCRIPTOR.fields_by_number.get(field.number)
    if declared is None:  # protobuf keeps unknown fields without parsing them, so this is not expected
        return f"field {field.number} holds {found} that do not parse"
    if declared.message_type is not None:
        kind = declared.message_type.full_name
    elif declared.enum_type is not None:
        kind = declared.enum_type.full_name
    else:
        kind = _SCALAR_TYPE_NAMES[declared.type]
    kind = f"repeated {kind}" if declared.is_repeated else f"a {kind}"
    return f"field {field.number} holds {found} that do not parse as caffe.proto's {declared.name} ({kind})"


def serialize(net: NetParameter) -> bytes:
    return net.SerializeToString()


def blob_shape(blob) -> tuple[int, ...]:
    """A BlobProto's shape, from ``shape`` or the legacy num/channels/height/width."""
    if any(blob.HasField(name) for name in ("num", "channels", "height", "width")):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(blob.shape.dim)


def layer_infos(net: NetParameter) -> list[LayerInfo]:
    """Describe the net's layers, ``layer`` (V2) ones first, then legacy ``layers``."""
    infos = [_layer_info(LAYER_FIELD, index, layer, layer.type) for index, layer in enumerate(net.layer)]
    v1_type = caffe_pb2.V1LayerParameter.LayerType
    for index, layer in enumerate(net.layers):
        enum_name = v1_type.Name(layer.type) if layer.type in v1_type.values() else str(layer.type)
        infos.append(_layer_info(LEGACY_LAYER_FIELD, index, layer, _V1_TYPE_NAMES.get(enum_name, enum_name)))
    return infos


def _layer_info(layer_field: int, index: int, layer, type_name: str) -> LayerInfo:
    shapes = tuple(blob_shape(blob) for blob in layer.blobs)
    raw_types = tuple(blob.raw_data_type if blob.HasField("raw_data_type") else None for blob in layer.blobs)
    return LayerInfo(layer_field, index, text(layer.name), text(type_name), shapes, raw_types)


def text(value: str | bytes) -> str:
    """A string field as text: protobuf gives a name that is not valid UTF-8 as bytes; those show escaped."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def layers_by_address(infos: list[LayerInfo]) -> dict[tuple[int, int], LayerInfo]:
    """Layers keyed by (layer field, index), the first half of a BlobAddress."""
    return {(info.layer_field, info.index): info for info in infos}


def to_deploy(net: NetParameter) -> list[str]:
    """Turn Cmp layers into stock ones and drop the fork's fields; return the changed layers' names."""
    changed = []
    for layer in net.layer:
        stock = CMP_TO_STOCK.get(layer.type)
        if stock:
            layer.type = stock
        cleared = False
        for params_name in ("convolution_param", "inner_product_param"):
            # Only a parameter message the layer has: touching an absent one would add it, empty.
            if not layer.HasField(params_name):
                continue
            params = getattr(layer, params_name)
            for name in _CMP_FIELDS:
                if params.HasField(name):
                    params.ClearField(name)
                    cleared = True
        if stock or cleared:
            changed.append(layer.name)
    return changed


def deploy_skeleton(skeleton: bytes, path: str | None = None) -> bytes:
    """A serialized net with :func:`to_deploy` applied: what stock Caffe accepts.

    Refuses a net with fields that do not parse as caffe.proto declares them:
    rewriting goes through protobuf, which would drop them.
    """
    net, conflicts = parse_skeleton_and_conflicts(skeleton, path)
    if not to_deploy(net):
        return skeleton  # nothing of the fork's: the net as it was, byte for byte
    if conflicts:
        raise ModelError(f"{conflicts[0]}; deploy rewrites the net with caffe.proto and would drop it", path=path)
    return serialize(net)


def read_prototxt(path: str | os.PathLike) -> NetParameter:
    """Read a text-format NetParameter (a ``.prototxt`` net definition)."""
    return _read_text(path, NetParameter(), "net prototxt")


def _read_text(path, target, what):
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except FileNotFoundError:
        raise ModelError("no such file", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read as a text prototxt ({exc})", path=path) from None
    try:
        text_format.Parse(text, target)
    except text_format.ParseError as exc:
        raise ModelError(f"not a valid {what} ({exc})", path=path) from None
    return target


def read_solver_prototxt(path: str | os.PathLike) -> caffe_pb2.SolverParameter:
    """Read a text-format SolverParameter (a ``solver.prototxt``)."""
    return _read_text(path, caffe_pb2.SolverParameter(), "solver prototxt")


def to_text(proto: message.Message) -> str:
    """A message in protobuf text format, as Caffe reads prototxt."""
    return text_format.MessageToString(proto)


def weights_only_skeleton(layers: list[tuple[str, list]]) -> bytes:
    """A NetParameter holding only layer names, blob shapes and diffs, for HDF5 weights.

    ``layers`` is ``[(name, [(shape, diff_or_None), ...]), ...]`` where a diff
    is a float32 or float64 array.
    """
    net = NetParameter()
    for name, blobs in layers:
        layer = net.layer.add(name=name)
        for shape, diff in blobs:
            blob = layer.blobs.add()
            blob.shape.dim.extend(shape)
            if diff is not None:
                target = blob.double_diff if diff.dtype.itemsize == 8 else blob.diff
                target.extend(diff.ravel().tolist())
    return net.SerializeToString()


def blob_diff(blob):
    """A BlobProto's diff values as a list and their precision, or ``None``."""
    if len(blob.double_diff):
        return list(blob.double_diff), "<f8"
    if len(blob.diff):
        return list(blob.diff), "<f4"
    return None

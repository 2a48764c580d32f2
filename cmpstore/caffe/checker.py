r"""Every check that a model is one cmpstore can store, in one place (as onnx's ``checker``).

The readers, the writers and the API call these; each raises the error class
its caller asks for (ModelError for a model a file gives, UsageError for one
a caller built, FormatError inside a ``.cmps`` file), naming the layer and
the blob.  The limits they apply are :mod:`cmpstore.limits`.  The checks of
a ``.cmps`` file's own framing (its header, sections, codec payloads) are
the format's, in :mod:`cmpstore.cmps`.

Layers are :class:`~cmpstore.caffe.netproto.LayerInfo`\ s and a net a parsed
NetParameter; this module imports neither module, so both can use it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import numpy as np

from .. import limits
from ..errors import CmpstoreError, ModelError, UsageError
from . import wire
from .fields import (
    BLOBS_FIELD,
    DATA_FIELD,
    DOUBLE_DATA_FIELD,
    LAYER_FIELD,
    LEGACY_LAYER_FIELD,
    RAW_DATA_DTYPE,
    RAW_DATA_FIELD,
    VALUE_FIELD_NAMES,
    VALUE_FIELDS,
    BlobAddress,
    Payload,
    element_count,
)


def check_model(model, path: str | None = None, error: type[CmpstoreError] = UsageError) -> list:
    """Check that ``model`` (a :class:`~cmpstore.caffe.model.Model`) is one cmpstore can store; return its layers.

    What a caller who builds a Model can get wrong raises ``error`` naming
    ``path``, the layer and the blob: a payload whose address names no blob
    of the net (or one named twice), values that are not a contiguous 1-D
    numpy array of exactly the value field's dtype (little-endian float32 for
    ``data``, float64 for ``double_data``), a count that does not fill the
    blob's shape, values left in the skeleton.  A model beyond the format's
    limits raises ModelError (:func:`check_model_sizes`).
    """
    try:
        seen: set[BlobAddress] = set()
        for payload in model.payloads:
            layer, where = _payload_blob(model, payload, error)
            if payload.address in seen:
                raise error(f"two payloads for its {VALUE_FIELD_NAMES[payload.address.value_field]}", where=where)
            seen.add(payload.address)
            # What the skeleton says of the blob, not a caller's mistake: a model error.
            check_value_field(layer, payload.address.blob_index, payload.address.value_field)
            expected = layer.value_dtype(payload.address.blob_index, payload.address.value_field)
            _check_values(payload, expected, error, where)
            check_value_count(layer, payload.address.blob_index, payload.values.size, error)
        check_weightless(model.net, error)
    except CmpstoreError as exc:
        raise exc.located(path=path) from None
    check_model_sizes(model, path)
    return model.layers


def check_model_shapes(model, path: str | None = None) -> list:
    """Check that every payload's length matches its blob's shape, and that ``raw_data`` values
    belong to a blob whose ``raw_data_type`` is a float type; return the layers.

    Raises ModelError naming ``path``, the layer and the blob otherwise
    (also for a payload whose address names no blob of the net).
    """
    try:
        for payload in model.payloads:
            layer, _ = _payload_blob(model, payload, ModelError)
            check_value_count(layer, payload.address.blob_index, payload.values.size)
            check_value_field(layer, payload.address.blob_index, payload.address.value_field)
    except ModelError as exc:
        raise exc.located(path=path) from None
    return model.layers


def check_model_sizes(model, path: str | None = None) -> int:
    """Check every blob and the whole model against the limits; return its decoded size.

    Raises ModelError naming ``path`` (and the layer and blob where one is over).
    """
    try:
        return check_sizes(model.layers, (payload.address for payload in model.payloads), len(model.skeleton))
    except ModelError as exc:
        raise exc.located(path=path) from None


def _payload_blob(model, payload: Payload, error: type[CmpstoreError]) -> tuple:
    """The layer a payload's address names, and how errors name its blob; ``error`` if it names none."""
    if not isinstance(payload, Payload) or not isinstance(payload.address, BlobAddress):
        raise error(f"a payload must be a Payload with a BlobAddress, got {payload!r:.100}")
    address = payload.address
    layer = model.layer_at.get((address.layer_field, address.layer_index))
    if layer is None:
        raise error(
            f"a payload names layer {address.layer_index} of field {address.layer_field} "
            f"({'layer' if address.layer_field == LAYER_FIELD else 'layers'}), which the net does not have"
            if address.layer_field in BLOBS_FIELD
            else f"a payload names layer field {address.layer_field}; use {LAYER_FIELD} (layer) or "
            f"{LEGACY_LAYER_FIELD} (layers)"
        )
    if not 0 <= address.blob_index < len(layer.blob_shapes):
        raise error(
            f"a payload names blob {address.blob_index}, but the layer has {len(layer.blob_shapes)} blobs",
            where=layer.label,
        )
    where = f"{layer.label} blob {address.blob_index}"
    if address.value_field not in VALUE_FIELDS:
        raise error(f"value field {address.value_field} is not 5 (data), 8 (double_data) or 12 (raw_data)", where=where)
    return layer, where


def _check_values(payload: Payload, expected: np.dtype, error: type[CmpstoreError], where: str) -> None:
    """A payload's values must be what the writers write as they are: contiguous, 1-D, of the field's dtype."""
    values = payload.values
    if not isinstance(values, np.ndarray):
        raise error(f"values must be a numpy array, got {type(values).__name__}", where=where)
    value_field = payload.address.value_field
    if values.dtype != expected:
        order = "big-endian " if values.dtype.byteorder == ">" else ""
        raise error(
            f"values are {order}{values.dtype.name} ({values.dtype.str}); "
            f"{VALUE_FIELD_NAMES[value_field]} (field {value_field}) holds {expected.str}",
            where=where,
        )
    if values.ndim != 1:
        raise error(f"values have the shape {values.shape}; a payload is 1-D (values.reshape(-1))", where=where)
    if not values.flags.c_contiguous:
        raise error("values are not contiguous in memory (use np.ascontiguousarray)", where=where)


def check_net_size(skeleton, path: str | None = None) -> int:
    """Raise ModelError if the serialized net has more layers or fields than the limits; return its layers.

    Walks only the NetParameter's own fields and each layer's, stopping at the
    first limit passed, so a hostile net costs at most about a second here
    (a blob, with its values, is one field).
    """
    layers = fields = 0
    try:
        for field in wire.iter_fields(skeleton, 0, len(skeleton)):
            fields += 1
            if field.number in (LAYER_FIELD, LEGACY_LAYER_FIELD) and field.wire_type == wire.LENGTH_DELIMITED:
                layers += 1
                if layers > limits.MAX_LAYERS:
                    raise ModelError(f"the net has more than {limits.MAX_LAYERS:,} layers, the limit", path=path)
                for _ in wire.iter_fields(skeleton, field.value_start, field.end):
                    fields += 1
                    if fields > limits.MAX_NET_FIELDS:
                        break
            if fields > limits.MAX_NET_FIELDS:
                raise ModelError(
                    f"the net and its layers have more than {limits.MAX_NET_FIELDS:,} fields, the limit", path=path
                )
    except wire.WireError as exc:
        raise ModelError(f"not a valid Caffe NetParameter ({exc})", path=path) from None
    return layers


def check_sizes(
    layers: list,
    value_fields: Iterable[BlobAddress],
    skeleton_bytes: int,
    error: type[CmpstoreError] = ModelError,
    max_output_bytes: int | None = None,
) -> int:
    """Check every blob and the whole model against :mod:`cmpstore.limits`; return the decoded size.

    ``value_fields`` are the addresses of the values the model holds.  A blob
    without values counts as the float32 zeros of its shape, which is what
    writing it as HDF5 gives.  The decoded size is ``skeleton_bytes`` plus
    every blob's values; a shape with a negative dimension is refused here too.
    """
    if skeleton_bytes > limits.MAX_SKELETON_BYTES:
        raise error(
            f"the net without its weights is {skeleton_bytes:,} bytes, more than the limit of "
            f"{limits.MAX_SKELETON_BYTES:,}"
        )
    by_address = {(info.layer_field, info.index): info for info in layers}
    itemsizes: dict[tuple[int, int, int], list[int]] = {}
    for address in value_fields:
        key = (address.layer_field, address.layer_index, address.blob_index)
        dtype = by_address[key[:2]].value_dtype(address.blob_index, address.value_field)
        itemsizes.setdefault(key, []).append(dtype.itemsize if dtype is not None else 4)
    decoded = skeleton_bytes
    for layer in layers:
        for blob_index, shape in enumerate(layer.blob_shapes):
            where = f"{layer.label} blob {blob_index}"
            count = element_count(shape)
            if count is None:
                raise error(f"blob shape {list(shape)} has a negative dimension", where=where)
            for itemsize in itemsizes.get((layer.layer_field, layer.index, blob_index), [4]):
                limits.check_blob(count, itemsize, error, where)
                decoded += count * itemsize
    limits.check_model(decoded, error, max_output_bytes)
    return decoded


def check_value_count(layer, blob_index: int, count: int, error: type[CmpstoreError] = ModelError) -> None:
    """Raise ``error`` unless ``count`` values fill the blob's shape exactly (which has no negative dimension)."""
    shape = layer.blob_shapes[blob_index]
    expected = element_count(shape)
    where = f"{layer.label} blob {blob_index}"
    if expected is None:
        raise error(f"blob shape {list(shape)} has a negative dimension", where=where)
    if count != expected:
        raise error(f"blob holds {count} values but its shape {list(shape)} needs {expected}", where=where)


def check_value_field(layer, blob_index: int, value_field: int, error: type[CmpstoreError] = ModelError):
    """Raise ``error`` for ``raw_data`` values in a blob whose ``raw_data_type`` is not FLOAT16, FLOAT or DOUBLE."""
    if value_field == RAW_DATA_FIELD and layer.value_dtype(blob_index, value_field) is None:
        raw_type = layer.raw_data_types[blob_index] if blob_index < len(layer.raw_data_types) else None
        said = "no raw_data_type" if raw_type is None else f"raw_data_type {raw_type}"
        raise error(
            f"holds raw_data values but has {said}; values come only from FLOAT16, FLOAT or DOUBLE raw_data",
            where=f"{layer.label} blob {blob_index}",
        )


def check_weightless(
    net, error: type[CmpstoreError] = ModelError, raw_types: Collection[int] = tuple(RAW_DATA_DTYPE)
) -> None:
    """Raise ``error`` naming the layer and blob if a BlobProto of ``net`` still holds values.

    A skeleton's values belong in the payloads (a ``.cmps`` file's BLOB
    sections): values left in it would be decoded beside them, into a blob
    with two value fields of which Caffe reads one.  ``raw_data`` counts as
    values in a blob whose ``raw_data_type`` is one of ``raw_types`` (files
    of format version 2 and 3 took out only FLOAT16 ones).
    """
    for layers in (net.layer, net.layers):
        for index, layer in enumerate(layers):
            for blob_index, blob in enumerate(layer.blobs):
                fields = [("data", DATA_FIELD), ("double_data", DOUBLE_DATA_FIELD)]
                if blob.HasField("raw_data_type") and blob.raw_data_type in raw_types:
                    fields.append(("raw_data", RAW_DATA_FIELD))
                for name, number in fields:
                    if len(getattr(blob, name)):
                        label = f"layer '{layer.name}'" if layer.name else f"layer #{index}"
                        raise error(
                            f"the skeleton still holds {len(getattr(blob, name)):,} {name} "
                            f"{'bytes' if number == RAW_DATA_FIELD else 'values'} (field {number}); "
                            "values belong in payloads (a .cmps file's BLOB sections)",
                            where=f"{label} blob {blob_index}",
                        )

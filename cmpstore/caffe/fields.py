"""Where a caffemodel keeps its values: the field numbers, the value dtypes and the addresses of payloads.

The vocabulary that the model (:mod:`cmpstore.caffe.model`), the protobuf
view of a net (:mod:`cmpstore.caffe.netproto`) and the checks
(:mod:`cmpstore.caffe.checker`) share, in a module that imports none of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: NetParameter fields that hold layers, and the BlobProto list field inside each.
LAYER_FIELD = 100  # NetParameter.layer (LayerParameter)
LEGACY_LAYER_FIELD = 2  # NetParameter.layers (V1LayerParameter)
BLOBS_FIELD = {LAYER_FIELD: 7, LEGACY_LAYER_FIELD: 6}
#: BlobProto fields whose values cmpstore takes out, with their numpy dtype.
DATA_FIELD = 5
DOUBLE_DATA_FIELD = 8
#: NVIDIA Caffe's ``bytes raw_data = 12``, whose meaning ``raw_data_type`` (field 10, enum Type) gives.
#: cmpstore takes it out as values when that type is a float one: FLOAT16 (which OpenCV reads), FLOAT
#: or DOUBLE; the integer types stay in the skeleton as bytes.
RAW_DATA_FIELD = 12
RAW_DATA_TYPE_FIELD = 10
RAW_DATA_TYPE_DOUBLE = 0
RAW_DATA_TYPE_FLOAT = 1
RAW_DATA_TYPE_FLOAT16 = 2
#: The dtype of ``data`` and ``double_data`` values; ``raw_data``'s is its blob's (RAW_DATA_DTYPE).
PAYLOAD_DTYPE = {DATA_FIELD: np.dtype("<f4"), DOUBLE_DATA_FIELD: np.dtype("<f8")}
RAW_DATA_DTYPE = {
    RAW_DATA_TYPE_DOUBLE: np.dtype("<f8"),
    RAW_DATA_TYPE_FLOAT: np.dtype("<f4"),
    RAW_DATA_TYPE_FLOAT16: np.dtype("<f2"),
}
RAW_DATA_TYPE_NAMES = {RAW_DATA_TYPE_DOUBLE: "DOUBLE", RAW_DATA_TYPE_FLOAT: "FLOAT", RAW_DATA_TYPE_FLOAT16: "FLOAT16"}
#: Every value field, in field-number order (the order Caffe writes them in).
VALUE_FIELDS = (DATA_FIELD, DOUBLE_DATA_FIELD, RAW_DATA_FIELD)
VALUE_FIELD_NAMES = {DATA_FIELD: "data", DOUBLE_DATA_FIELD: "double_data", RAW_DATA_FIELD: "raw_data"}


def value_dtype(value_field: int, raw_data_type: int | None = None) -> np.dtype | None:
    """The dtype of a value field's values; for ``raw_data``, that of the blob's ``raw_data_type``.

    None where the field holds no values cmpstore takes out: an unknown field,
    or ``raw_data`` of a blob without a float ``raw_data_type``.
    """
    if value_field == RAW_DATA_FIELD:
        return RAW_DATA_DTYPE.get(raw_data_type) if raw_data_type is not None else None
    return PAYLOAD_DTYPE.get(value_field)


@dataclass(frozen=True, order=True)
class BlobAddress:
    """Where a payload lives: which layer list, layer, blob and value field."""

    layer_field: int  # LAYER_FIELD or LEGACY_LAYER_FIELD
    layer_index: int
    blob_index: int
    value_field: int  # one of VALUE_FIELDS


@dataclass
class Payload:
    """One weight array taken out of a BlobProto (1-D, little-endian float)."""

    address: BlobAddress
    values: np.ndarray


def element_count(shape: tuple[int, ...]) -> int | None:
    """Values a blob of this shape holds, exactly (Python ints, no overflow); None if a dimension is negative."""
    if any(dim < 0 for dim in shape):
        return None
    return math.prod(shape)

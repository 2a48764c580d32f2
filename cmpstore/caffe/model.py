"""The in-memory model: a weightless NetParameter plus the weight arrays taken out of it.

A caffemodel is almost entirely packed float arrays.  cmpstore splits it into

* the *skeleton*: the serialized NetParameter with every ``BlobProto.data``
  and ``BlobProto.double_data`` field removed (everything else, unknown fields
  included, stays byte for byte), and
* the *payloads*: one numpy array per removed field, addressed by where it
  came from.

Putting the payloads back into the skeleton gives the original file again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

#: NetParameter fields that hold layers, and the BlobProto list field inside each.
LAYER_FIELD = 100  # NetParameter.layer (LayerParameter)
LEGACY_LAYER_FIELD = 2  # NetParameter.layers (V1LayerParameter)
BLOBS_FIELD = {LAYER_FIELD: 7, LEGACY_LAYER_FIELD: 6}
#: BlobProto fields whose values cmpstore takes out, with their numpy dtype.
DATA_FIELD = 5
DOUBLE_DATA_FIELD = 8
PAYLOAD_DTYPE = {DATA_FIELD: np.dtype("<f4"), DOUBLE_DATA_FIELD: np.dtype("<f8")}


class SourceFormat(IntEnum):
    """The kind of weights file a model was read from (and is written back as by default)."""

    CAFFEMODEL = 1
    HDF5 = 2


@dataclass(frozen=True, order=True)
class BlobAddress:
    """Where a payload lives: which layer list, layer, blob and value field."""

    layer_field: int  # LAYER_FIELD or LEGACY_LAYER_FIELD
    layer_index: int
    blob_index: int
    value_field: int  # DATA_FIELD or DOUBLE_DATA_FIELD


@dataclass
class Payload:
    """One weight array taken out of a BlobProto (1-D, little-endian float)."""

    address: BlobAddress
    values: np.ndarray


@dataclass
class Model:
    """A Caffe model as cmpstore holds it; see the module docstring."""

    skeleton: bytes
    payloads: list[Payload] = field(default_factory=list)
    source_format: SourceFormat = SourceFormat.CAFFEMODEL

    def payload_map(self) -> dict[BlobAddress, np.ndarray]:
        return {payload.address: payload.values for payload in self.payloads}

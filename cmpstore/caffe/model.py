"""The in-memory model: a weightless NetParameter plus the weight arrays taken out of it.

A caffemodel is almost entirely packed float arrays.  cmpstore splits it into

* the *skeleton*: the serialized NetParameter with every ``BlobProto.data``
  and ``BlobProto.double_data`` field, and the ``raw_data`` of FLOAT16, FLOAT
  and DOUBLE blobs, removed (everything else, unknown fields included, stays byte for byte), and
* the *payloads*: one numpy array per removed field, addressed by where it
  came from.

Putting the payloads back into the skeleton gives the original file again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property

import numpy as np

from ..errors import CmpstoreError, ModelError, UsageError
from . import checker, netproto
from .fields import (  # noqa: F401 - the vocabulary of payloads, named here for the modules that use a Model
    BLOBS_FIELD,
    DATA_FIELD,
    DOUBLE_DATA_FIELD,
    LAYER_FIELD,
    LEGACY_LAYER_FIELD,
    PAYLOAD_DTYPE,
    RAW_DATA_DTYPE,
    RAW_DATA_FIELD,
    RAW_DATA_TYPE_DOUBLE,
    RAW_DATA_TYPE_FIELD,
    RAW_DATA_TYPE_FLOAT,
    RAW_DATA_TYPE_FLOAT16,
    RAW_DATA_TYPE_NAMES,
    VALUE_FIELD_NAMES,
    VALUE_FIELDS,
    BlobAddress,
    Payload,
    value_dtype,
)


class SourceFormat(IntEnum):
    """The kind of weights file a model was read from (and is written back as by default)."""

    CAFFEMODEL = 1
    HDF5 = 2


@dataclass
class Model:
    """A Caffe model as cmpstore holds it; see the module docstring.

    The skeleton is parsed once, when first needed, into :attr:`net` and the
    layer table :attr:`layers`; a model's skeleton must not change after that.
    """

    skeleton: bytes
    payloads: list[Payload] = field(default_factory=list)
    source_format: SourceFormat = SourceFormat.CAFFEMODEL

    @cached_property
    def net(self):
        """The skeleton as a ``caffe_pb2.NetParameter`` (raises ModelError if it does not parse)."""
        return netproto.parse_skeleton(self.skeleton)

    @cached_property
    def layers(self) -> list:
        """Every layer as a :class:`~cmpstore.caffe.netproto.LayerInfo`, ``layer`` ones first."""
        return netproto.layer_infos(self.net)

    @cached_property
    def layer_at(self) -> dict:
        """The layers keyed by ``(layer_field, layer_index)``, the first half of a BlobAddress."""
        return {(info.layer_field, info.index): info for info in self.layers}

    def payload_map(self) -> dict[BlobAddress, np.ndarray]:
        return {payload.address: payload.values for payload in self.payloads}

    def check(self, path: str | None = None, error: type[CmpstoreError] = UsageError) -> list:
        """Check that this is a model cmpstore can store; return its layers (:func:`.checker.check_model`).

        Readers give only models that pass; every public function that takes
        a Model from a user checks it first.

        Examples
        --------
        >>> from cmpstore.synthetic import build_model
        >>> model = build_model()
        >>> bad = Model(model.skeleton, [Payload(model.payloads[0].address, model.payloads[0].values.astype(">f4"))])
        >>> bad.check()
        Traceback (most recent call last):
        ...
        cmpstore.errors.UsageError: layer 'conv1' blob 0: values are big-endian float32 (>f4); data (field 5) holds <f4
        """
        return checker.check_model(self, path, error)

    def check_shapes(self, path: str | None = None) -> list:
        """Check that the payloads fill their blobs; return the layers (:func:`.checker.check_model_shapes`)."""
        return checker.check_model_shapes(self, path)

    def check_sizes(self, path: str | None = None) -> int:
        """Check the model against the limits; return its decoded size (:func:`.checker.check_model_sizes`)."""
        return checker.check_model_sizes(self, path)

    def weights_by_layer(self, path: str | None = None) -> dict[str, list[np.ndarray]]:
        """The blobs by layer name, each shaped as in Caffe; layers without blobs are left out.

        A blob with both ``double_data`` and ``data`` gives its ``double_data``, as Caffe reads it;
        a blob with float ``raw_data`` gives it in its own dtype (a FLOAT16 one as float16 values,
        unconverted; see :func:`blob_values`).
        """
        values = self.payload_map()
        weights: dict[str, list[np.ndarray]] = {}
        for info in self.named_layers(path):
            blobs = []
            for blob_index, shape in enumerate(info.blob_shapes):
                array = blob_values(values, info.layer_field, info.index, blob_index)
                array = np.zeros(0, dtype="<f4") if array is None else array
                blobs.append(array.reshape(shape) if array.size else array)
            weights[info.name] = blobs
        return weights

    def value_fields_by_layer(self, path: str | None = None) -> dict[str, list[dict[str, np.ndarray]]]:
        """Every value field of every blob by layer name: ``{"conv1": [{"data": array}, {"data": array}]}``.

        Unlike :meth:`weights_by_layer` nothing is left out: a blob with both
        ``data`` and ``double_data`` gives both, each shaped; one with neither
        gives ``{}``.  Layers without blobs are left out.
        """
        values = self.payload_map()
        fields: dict[str, list[dict[str, np.ndarray]]] = {}
        for info in self.named_layers(path):
            blobs = []
            for blob_index, shape in enumerate(info.blob_shapes):
                found = {}
                for number, name in VALUE_FIELD_NAMES.items():
                    array = values.get(BlobAddress(info.layer_field, info.index, blob_index, number))
                    if array is not None:
                        found[name] = array.reshape(shape) if array.size else array
                blobs.append(found)
            fields[info.name] = blobs
        return fields

    def named_layers(self, path: str | None) -> list:
        """The layers that have blobs, checked, each name once (else ModelError naming ``path``)."""
        named = []
        seen = set()
        for info in self.check_shapes(path):
            if not info.blob_shapes:
                continue
            if info.name in seen:
                raise ModelError(
                    "duplicate layer name: weights by name would be ambiguous", path=path, where=info.label
                )
            seen.add(info.name)
            named.append(info)
        return named


def blob_values(values: dict[BlobAddress, np.ndarray], layer_field: int, layer_index: int, blob_index: int):
    """A blob's values in ``values`` (a :meth:`Model.payload_map`): ``double_data`` where the blob has it,
    else ``data``, else ``raw_data`` (of a FLOAT16, FLOAT or DOUBLE blob); None for none.  The first two
    are the precedence of Caffe's ``Blob::FromProto``; OpenCV and NVIDIA Caffe read ``raw_data`` only for
    a blob without ``data``."""
    for value_field in (DOUBLE_DATA_FIELD, DATA_FIELD, RAW_DATA_FIELD):
        found = values.get(BlobAddress(layer_field, layer_index, blob_index, value_field))
        if found is not None:
            return found
    return None

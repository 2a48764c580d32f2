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
    value_field: int  # one of VALUE_FIELDS


@dataclass
class Payload:
    """One weight array taken out of a BlobProto (1-D, little-endian float)."""

    address: BlobAddress
    values: np.ndarray


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
        from . import netproto  # netproto imports this module

        return netproto.parse_skeleton(self.skeleton)

    @cached_property
    def layers(self) -> list:
        """Every layer as a :class:`~cmpstore.caffe.netproto.LayerInfo`, ``layer`` ones first."""
        from . import netproto

        return netproto.layer_infos(self.net)

    @cached_property
    def layer_at(self) -> dict:
        """The layers keyed by ``(layer_field, layer_index)``, the first half of a BlobAddress."""
        return {(info.layer_field, info.index): info for info in self.layers}

    def payload_map(self) -> dict[BlobAddress, np.ndarray]:
        return {payload.address: payload.values for payload in self.payloads}

    def check(self, path: str | None = None, error: type[CmpstoreError] = UsageError) -> list:
        """Check that this is a model cmpstore can store; return its layers.

        What a caller who builds a Model can get wrong raises ``error``
        naming ``path``, the layer and the blob: a payload whose address
        names no blob of the net (or one named twice), values that are not a
        contiguous 1-D numpy array of exactly the value field's dtype
        (little-endian float32 for ``data``, float64 for ``double_data``), a
        count that does not fill the blob's shape, values left in the
        skeleton.  A model beyond the format's limits raises ModelError
        (:meth:`check_sizes`).  Readers give only models that pass; every
        public function that takes a Model from a user checks it first.

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
        from .netproto import check_value_count, check_value_field, check_weightless

        try:
            seen: set[BlobAddress] = set()
            for payload in self.payloads:
                layer, where = self._payload_blob(payload, error)
                if payload.address in seen:
                    raise error(f"two payloads for its {VALUE_FIELD_NAMES[payload.address.value_field]}", where=where)
                seen.add(payload.address)
                # What the skeleton says of the blob, not a caller's mistake: a model error.
                check_value_field(layer, payload.address.blob_index, payload.address.value_field)
                _check_values(payload, layer.value_dtype(payload.address.blob_index, payload.address.value_field),
                              error, where)  # fmt: skip
                check_value_count(layer, payload.address.blob_index, payload.values.size, error)
            check_weightless(self.net, error)
        except CmpstoreError as exc:
            raise exc.located(path=path) from None
        self.check_sizes(path)
        return self.layers

    def check_shapes(self, path: str | None = None) -> list:
        """Check that every payload's length matches its blob's shape, and that ``raw_data`` values
        belong to a blob whose ``raw_data_type`` is a float type; return the layers.

        Raises ModelError naming ``path``, the layer and the blob otherwise
        (also for a payload whose address names no blob of the net).
        """
        from ..errors import ModelError
        from .netproto import check_value_count, check_value_field

        try:
            for payload in self.payloads:
                layer, _ = self._payload_blob(payload, ModelError)
                check_value_count(layer, payload.address.blob_index, payload.values.size)
                check_value_field(layer, payload.address.blob_index, payload.address.value_field)
        except ModelError as exc:
            raise exc.located(path=path) from None
        return self.layers

    def _payload_blob(self, payload: Payload, error: type[CmpstoreError]) -> tuple:
        """The layer a payload's address names, and how errors name its blob; ``error`` if it names none."""
        if not isinstance(payload, Payload) or not isinstance(payload.address, BlobAddress):
            raise error(f"a payload must be a Payload with a BlobAddress, got {payload!r:.100}")
        address = payload.address
        layer = self.layer_at.get((address.layer_field, address.layer_index))
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
            raise error(
                f"value field {address.value_field} is not 5 (data), 8 (double_data) or 12 (raw_data)", where=where
            )
        return layer, where

    def check_sizes(self, path: str | None = None) -> int:
        """Check every blob and the whole model against the limits (:mod:`cmpstore.limits`); return its decoded size.

        Raises ModelError naming ``path`` (and the layer and blob where one is over).
        """
        from .netproto import check_sizes

        try:
            return check_sizes(self.layers, (payload.address for payload in self.payloads), len(self.skeleton))
        except ModelError as exc:
            raise exc.located(path=path) from None

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

"""Import the compressed-model format that the Deep Compression authors released.

``AlexNet_compressed.net`` (songhan/Deep-Compression-AlexNet, read there by
``decode.py`` with Caffe) is laid out as:

* one uint32 per compressed layer: its number of stored entries;
* then per layer, in net order (the layers with parameters whose name
  contains ``conv``, ``fc`` or ``ip``):
  - the float32 codebook, 256 entries for a ``conv`` layer, 16 otherwise;
  - the float32 bias;
  - the codebook indices, one per byte (8-bit) or two per byte (4-bit, low
    nibble first);
  - the relative indices, two 4-bit values per byte, low nibble first, each
    storing gap - 1.

A weight whose position no entry names takes codebook entry 0, as in
``decode.py`` (the codebook's first entry is the zero of the pruned weights,
so filler entries use index 0 too).  Shapes come from the deploy prototxt,
so no Caffe is needed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from .. import limits
from ..errors import ModelError
from . import netproto
from .model import DATA_FIELD, LAYER_FIELD, BlobAddress, Model, Payload, SourceFormat
from .shapes import parameter_shapes

_NAME_MARKS = ("conv", "fc", "ip")


def import_han(path: str | os.PathLike, prototxt: str | os.PathLike) -> Model:
    """Read a Deep Compression ``.net`` file into a dense model, using ``prototxt`` for the shapes.

    The model's net is the prototxt's, with the weights attached to its layers.
    What the prototxt declares is checked first, and blamed on it: shapes
    Caffe could infer, a bias per layer, and sizes within the format's limits
    (:mod:`cmpstore.limits`); then the ``.net`` file must hold what those
    layers need, before any weight array is allocated.
    """
    path, prototxt = os.fspath(path), os.fspath(prototxt)
    net = netproto.read_prototxt(prototxt)
    try:
        layers = _layers(net)
    except ModelError as exc:
        raise exc.located(path=prototxt) from None
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as exc:
        raise ModelError(f"cannot read ({exc.strerror})", path=path) from None
    # The entry counts, codebooks and biases come before any entry: the least the file can hold.
    fixed = 4 * len(layers) + sum(4 * ((1 << layer.bits) + layer.bias_count) for layer in layers)
    if len(data) < fixed:
        raise ModelError(
            f"holds {len(data):,} bytes, fewer than the {fixed:,} that the entry counts, codebooks and biases of "
            f"the {len(layers)} layers of {prototxt} take",
            path=path,
        )
    reader = _Reader(data, path)
    entry_counts = reader.array(np.dtype("<u4"), len(layers), "entry counts")
    payloads = []
    for layer, entries in zip(layers, entry_counts.tolist(), strict=True):
        where = f"layer '{layer.name}'"
        codebook = reader.array(np.dtype("<f4"), 1 << layer.bits, f"{where} codebook")
        bias = reader.array(np.dtype("<f4"), layer.bias_count, f"{where} bias")
        per_byte = 8 // layer.bits
        codes = _unpack(reader.array(np.dtype("u1"), -(-entries // per_byte), f"{where} codebook indices"), layer.bits)
        gaps = _unpack(reader.array(np.dtype("u1"), -(-entries // 2), f"{where} relative indices"), 4)
        count = layer.weight_count
        positions = np.cumsum(gaps[:entries].astype(np.int64) + 1) - 1
        if entries and positions[-1] >= count:
            raise ModelError(f"relative indices run past the layer's {count} weights", path=path, where=where)
        indices = np.zeros(count, dtype=np.uint8)
        indices[positions] = codes[:entries]
        weights = codebook[indices]
        target = net.layer[layer.index]
        target.blobs.add().shape.dim.extend(layer.weight_shape)
        target.blobs.add().shape.dim.append(layer.bias_count)
        payloads.append(Payload(BlobAddress(LAYER_FIELD, layer.index, 0, DATA_FIELD), weights))
        payloads.append(Payload(BlobAddress(LAYER_FIELD, layer.index, 1, DATA_FIELD), bias.copy()))
    if reader.remaining:
        raise ModelError(f"{reader.remaining} bytes left after the last layer", path=path)
    return Model(netproto.serialize(net), payloads, SourceFormat.CAFFEMODEL)


@dataclass(frozen=True)
class _Layer:
    """A layer the ``.net`` file stores, as its prototxt declares it."""

    index: int  # in net.layer
    name: str
    weight_shape: tuple[int, ...]
    bias_count: int
    bits: int  # of its codebook indices

    @property
    def weight_count(self) -> int:
        return math.prod(self.weight_shape)


def _layers(net) -> list[_Layer]:
    """The layers the file stores, in order, with their sizes checked against the limits."""
    shapes = parameter_shapes(net)
    layers = []
    decoded = 0
    for index, layer in enumerate(net.layer):
        if layer.name not in shapes or not any(mark in layer.name for mark in _NAME_MARKS):
            continue
        where = f"layer '{layer.name}'"
        weight_shape, *bias_shape = shapes[layer.name]
        if not bias_shape:
            raise ModelError("the .net format stores a bias for every layer, but this one has none", where=where)
        found = _Layer(index, layer.name, weight_shape, math.prod(bias_shape[0]), 8 if "conv" in layer.name else 4)
        limits.check_blob(found.weight_count, 4, ModelError, f"{where} blob 0")
        limits.check_blob(found.bias_count, 4, ModelError, f"{where} blob 1")
        decoded += 4 * (found.weight_count + found.bias_count)
        layers.append(found)
    if not layers:
        raise ModelError("no conv/fc/ip layer with weights in this net")
    limits.check_model(decoded, ModelError)
    return layers


def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    """Values stored ``8 // bits`` per byte, low bits first."""
    if bits == 8:
        return packed
    return np.stack([packed & 0x0F, packed >> 4], axis=1).reshape(-1)


class _Reader:
    def __init__(self, data: bytes, path: str):
        self.data, self.path, self.pos = data, path, 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def array(self, dtype: np.dtype, count: int, what: str) -> np.ndarray:
        size = count * dtype.itemsize
        if size > self.remaining:
            raise ModelError(f"{what}: need {size} bytes, only {self.remaining} remain (truncated?)", path=self.path)
        values = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += size
        return values

"""Caffe's HDF5 weights (``.caffemodel.h5``): ``data/<layer name>/<blob index>`` datasets.

Written the way ``Net::ToHDF5`` does: a ``data`` group with one group per
layer (also for layers without blobs), and a ``diff`` group of the same
shape when the model carries gradients.
"""

from __future__ import annotations

import os

import numpy as np

from . import netproto
from .atomic import atomic_output
from .errors import ModelError, UsageError
from .model import DATA_FIELD, DOUBLE_DATA_FIELD, LAYER_FIELD, BlobAddress, Model, Payload, SourceFormat

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_VALUE_FIELD = {np.dtype("float32"): DATA_FIELD, np.dtype("float64"): DOUBLE_DATA_FIELD}


def read_hdf5(path: str | os.PathLike) -> Model:
    """Read Caffe HDF5 weights into a :class:`~cmpstore.model.Model`."""
    import h5py  # here, not at the top: it costs a tenth of the start-up time of every command

    path = os.fspath(path)
    try:
        with h5py.File(path, "r") as h5:
            return _read(h5, path)
    except OSError as exc:
        raise ModelError(f"cannot read as HDF5 ({exc})", path=path) from None


def _read(h5, path: str) -> Model:
    import h5py

    if "data" not in h5 or not isinstance(h5["data"], h5py.Group):
        raise ModelError("HDF5 file has no 'data' group: not Caffe weights", path=path)
    diffs = h5.get("diff")
    layers = []
    payloads = []
    for layer_index, (name, group) in enumerate(h5["data"].items()):
        where = f"layer '{name}'"
        if not isinstance(group, h5py.Group):
            raise ModelError("expected a group of blobs", path=path, where=where)
        blobs = []
        for blob_index in range(len(group)):
            dataset = group.get(str(blob_index))
            if not isinstance(dataset, h5py.Dataset):
                raise ModelError(f"blobs must be datasets named 0..{len(group) - 1}", path=path, where=where)
            values = _float_values(dataset, path, f"{where} blob {blob_index}")
            field = _VALUE_FIELD[values.dtype.newbyteorder("=")]
            payloads.append(Payload(BlobAddress(LAYER_FIELD, layer_index, blob_index, field), values.ravel()))
            diff = None
            if diffs is not None and isinstance(diffs.get(f"{name}/{blob_index}"), h5py.Dataset):
                diff = _float_values(diffs[f"{name}/{blob_index}"], path, f"{where} diff {blob_index}")
            blobs.append((dataset.shape, diff))
        layers.append((name, blobs))
    if not layers:
        raise ModelError("HDF5 'data' group holds no layers", path=path)
    return Model(netproto.weights_only_skeleton(layers), payloads, SourceFormat.HDF5)


def _float_values(dataset, path: str, where: str) -> np.ndarray:
    if dataset.dtype not in (np.dtype("<f4"), np.dtype(">f4"), np.dtype("<f8"), np.dtype(">f8")):
        raise ModelError(f"dataset of type {dataset.dtype}, expected float32 or float64", path=path, where=where)
    little = dataset.dtype.newbyteorder("<")
    return np.ascontiguousarray(dataset[()], dtype=little).reshape(-1)


def write_hdf5(model: Model, path: str | os.PathLike) -> None:
    """Write the model's weights as Caffe HDF5, atomically."""
    path = os.fspath(path)
    net = netproto.parse_skeleton(model.skeleton)
    values = model.payload_map()
    layers = [(LAYER_FIELD, index, layer) for index, layer in enumerate(net.layer)]
    layers += [(2, index, layer) for index, layer in enumerate(net.layers)]
    names = [layer.name for _, _, layer in layers]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ModelError(f"duplicate layer names {duplicates}: HDF5 weights are keyed by layer name", path=path)
    has_diff = any(netproto.blob_diff(blob) for _, _, layer in layers for blob in layer.blobs)
    import h5py

    try:
        with atomic_output(path) as stream, h5py.File(stream, "w") as h5:
            data = h5.create_group("data")
            diff = h5.create_group("diff") if has_diff else None
            for layer_field, layer_index, layer in layers:
                data_group = data.create_group(layer.name)
                diff_group = diff.create_group(layer.name) if diff is not None else None
                for blob_index, blob in enumerate(layer.blobs):
                    shape = netproto.blob_shape(blob)
                    address = (layer_field, layer_index, blob_index)
                    array = _blob_values(values, address, shape)
                    data_group.create_dataset(str(blob_index), data=array.reshape(shape))
                    blob_diff = netproto.blob_diff(blob)
                    if diff_group is not None:
                        diff_values = (
                            np.array(blob_diff[0], dtype=blob_diff[1])
                            if blob_diff
                            else np.zeros(array.size, array.dtype)
                        )
                        diff_group.create_dataset(str(blob_index), data=diff_values.reshape(shape))
    except OSError as exc:
        raise UsageError(f"cannot write HDF5 ({exc})", path=path) from None


def _blob_values(values: dict, address: tuple, shape: tuple[int, ...]) -> np.ndarray:
    for field in (DOUBLE_DATA_FIELD, DATA_FIELD):
        array = values.get(BlobAddress(*address, field))
        if array is not None:
            return array
    return np.zeros(netproto.element_count(shape) or 0, dtype="<f4")

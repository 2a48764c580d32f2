"""Caffe's HDF5 weights (``.caffemodel.h5``): ``data/<layer name>/<blob index>`` datasets.

Written the way ``Net::ToHDF5`` does: a ``data`` group with one group per
layer (also for layers without blobs), and a ``diff`` group of the same
shape when the model carries gradients.
"""

from __future__ import annotations

import io
import math
import os

import numpy as np

from .. import limits
from ..atomic import NEW_FILE, Placement, atomic_output
from ..errors import ModelError, UsageError
from ..streams.inflate import inflate_bound
from . import netproto
from .fields import element_count
from .model import (
    DATA_FIELD,
    DOUBLE_DATA_FIELD,
    LAYER_FIELD,
    LEGACY_LAYER_FIELD,
    RAW_DATA_FIELD,
    BlobAddress,
    Model,
    Payload,
    SourceFormat,
    blob_values,
)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_VALUE_FIELD = {np.dtype("float32"): DATA_FIELD, np.dtype("float64"): DOUBLE_DATA_FIELD}


def read_hdf5(path: str | os.PathLike, data: bytes | None = None) -> Model:
    """Read Caffe HDF5 weights into a :class:`~cmpstore.caffe.model.Model`; ``data``: the file's bytes, if read.

    Only values stored inside ``path`` itself are read: external links, soft
    links, external raw storage, virtual datasets, filters that HDF5 would
    load as plugins and user blocks are refused (:func:`_confined`), because
    HDF5 would otherwise open files the user never named.
    """
    import h5py  # here, not at the top: it costs a tenth of the start-up time of every command

    path = os.fspath(path)
    try:
        with h5py.File(io.BytesIO(data) if data is not None else path, "r") as h5:
            if h5.userblock_size:
                raise ModelError(
                    f"HDF5 file starts with a {h5.userblock_size}-byte user block, which can hide another format; "
                    "Caffe never writes one",
                    path=path,
                )
            return _read(h5, path)
    except OSError as exc:
        raise ModelError(f"cannot read as HDF5 ({exc})", path=path) from None


def _read(h5, path: str) -> Model:
    import h5py

    data = _linked(h5, "data", path)
    if not isinstance(data, h5py.Group):
        raise ModelError("HDF5 file has no 'data' group: not Caffe weights", path=path)
    if len(data) > limits.MAX_LAYERS:
        raise ModelError(f"'data' holds {len(data):,} layers, more than the limit of {limits.MAX_LAYERS:,}", path=path)
    diffs = _linked(h5, "diff", path)
    # Every dataset is located and checked before any is read: a few kilobytes of HDF5 can declare gigabytes.
    layers = []
    decoded = 0
    # Hard links can name one stored dataset many times: each name passes the bound on its own,
    # so the whole file's declared bytes are bounded by its distinct datasets' stored bytes too.
    stored_by_object: dict = {}
    for name in data.keys():
        if isinstance(name, bytes):  # h5py gives names that are not UTF-8 as bytes
            raise ModelError(f"layer name {name!r} is not UTF-8 text, which Caffe layer names are", path=path)
        where = f"layer '{name}'"
        group = _linked(data, name, path)
        if not isinstance(group, h5py.Group):
            raise ModelError("expected a group of blobs", path=path, where=where)
        diff_group = _linked(diffs, name, path) if isinstance(diffs, h5py.Group) else None
        blobs = []
        for blob_index in range(len(group)):
            dataset = _linked(group, str(blob_index), path)
            if not isinstance(dataset, h5py.Dataset):
                raise ModelError(f"blobs must be datasets named 0..{len(group) - 1}", path=path, where=where)
            decoded += _checked_size(dataset, path, f"{where} blob {blob_index}")
            stored_by_object[dataset.id] = dataset.id.get_storage_size()
            diff = None
            if isinstance(diff_group, h5py.Group):
                diff = _linked(diff_group, str(blob_index), path)
                if isinstance(diff, h5py.Dataset):
                    decoded += _checked_size(diff, path, f"{where} diff {blob_index}")
                    stored_by_object[diff.id] = diff.id.get_storage_size()
                else:
                    diff = None
            blobs.append((dataset, diff))
        layers.append((name, blobs))
    if not layers:
        raise ModelError("HDF5 'data' group holds no layers", path=path)
    stored = sum(stored_by_object.values())
    if decoded > inflate_bound(stored):
        raise ModelError(
            f"its datasets declare {decoded:,} bytes of values in all but store {stored:,} bytes "
            f"({len(stored_by_object):,} distinct datasets, the rest names for them), more than any HDF5 filter "
            "inflates (DEFLATE's 1032:1)",
            path=path,
        )
    try:
        limits.check_model(decoded, ModelError)
    except ModelError as exc:
        raise exc.located(path=path) from None
    return _model(layers, path)


def _model(layers: list, path: str) -> Model:
    """Read the checked datasets: ``layers`` is ``[(name, [(dataset, diff dataset or None), ...]), ...]``."""
    skeleton_layers = []
    payloads = []
    for layer_index, (name, blobs) in enumerate(layers):
        skeleton_blobs = []
        for blob_index, (dataset, diff) in enumerate(blobs):
            values = _float_values(dataset)
            field = _VALUE_FIELD[values.dtype.newbyteorder("=")]
            if values.size:  # an empty blob has no data field, as Caffe writes it
                payloads.append(Payload(BlobAddress(LAYER_FIELD, layer_index, blob_index, field), values))
            skeleton_blobs.append((dataset.shape, None if diff is None else _float_values(diff)))
        skeleton_layers.append((name, skeleton_blobs))
    return Model(netproto.weights_only_skeleton(skeleton_layers), payloads, SourceFormat.HDF5)


def _linked(group, name: str, path: str):
    """The object ``group`` holds under ``name`` (None if absent), if it is stored in this file.

    Only hard links are followed: an external link opens another file, and a
    soft link is a path that may run through one.  Caffe writes hard links only.
    """
    import h5py

    link = group.get(name, getlink=True)
    if link is None:
        return None
    where = f"object '{group.name.rstrip('/')}/{name}'"
    if isinstance(link, h5py.ExternalLink):
        raise ModelError(
            f"is an external link to '{link.path}' in {link.filename!r}; cmpstore reads only the named file",
            path=path,
            where=where,
        )
    if not isinstance(link, h5py.HardLink):
        raise ModelError("is a soft link; Caffe weights hold only hard links", path=path, where=where)
    return _confined(group[name], path, where)


# Filters built into the HDF5 library; any other filter id makes HDF5 search its plugin path.
_BUILTIN_FILTERS = frozenset({1, 2, 3, 4, 5, 6})  # deflate, shuffle, fletcher32, szip, nbit, scaleoffset


def _confined(item, path: str, where: str):
    """``item`` if its values are stored inside the file, else a ModelError saying where they would come from."""
    import h5py

    if not isinstance(item, h5py.Dataset):
        return item
    plist = item.id.get_create_plist()
    if plist.get_layout() == h5py.h5d.VIRTUAL:
        raise ModelError("is a virtual dataset, whose values come from other datasets or files", path=path, where=where)
    if plist.get_external_count():
        external = plist.get_external(0)[0].decode("utf-8", "replace")
        raise ModelError(f"keeps its values in an external file ({external!r})", path=path, where=where)
    for index in range(plist.get_nfilters()):
        filter_id = plist.get_filter(index)[0]
        if filter_id not in _BUILTIN_FILTERS:
            raise ModelError(
                f"is compressed with HDF5 filter {filter_id}, which would be loaded as a plugin", path=path, where=where
            )
    return item


def _checked_size(dataset, path: str, where: str) -> int:
    """The bytes of a dataset's values, after checking its type and its declared size, without reading it.

    The size must be within the format's limit for a blob, and one that the
    bytes stored for the dataset can hold: a compressed (or never written)
    dataset can declare a shape of any size in a few bytes, and HDF5 would
    inflate it, or fill it with its fill value, when it is read.
    """
    if dataset.dtype not in _FLOAT_TYPES:
        raise ModelError(f"dataset of type {dataset.dtype}, expected float32 or float64", path=path, where=where)
    if dataset.shape is None:
        raise ModelError(
            "dataset has no dataspace (h5py.Empty), so no values; a blob is an array", path=path, where=where
        )
    count = math.prod(dataset.shape)
    try:
        limits.check_blob(count, dataset.dtype.itemsize, ModelError, where)
    except ModelError as exc:
        raise exc.located(path=path) from None
    declared = count * dataset.dtype.itemsize
    stored = dataset.id.get_storage_size()
    if declared > inflate_bound(stored):
        raise ModelError(
            f"declares {declared:,} bytes of values but stores {stored:,} bytes, more than any HDF5 filter "
            "inflates (DEFLATE's 1032:1)",
            path=path,
            where=where,
        )
    return declared


_FLOAT_TYPES = (np.dtype("<f4"), np.dtype(">f4"), np.dtype("<f8"), np.dtype(">f8"))


def _float_values(dataset) -> np.ndarray:
    """A checked dataset's values (see :func:`_checked_size`), little-endian and 1-D."""
    little = dataset.dtype.newbyteorder("<")
    return np.ascontiguousarray(dataset[()], dtype=little).reshape(-1)


def _group_name_problem(name: str) -> str | None:
    """Why HDF5 cannot store ``name`` as the name of one group, or None if it can."""
    if not name:
        return "an empty name cannot name an HDF5 group"
    if name == ".":
        return "'.' names the enclosing group itself in HDF5"
    if "/" in name:
        return "HDF5 reads '/' in a name as a path into other groups"
    if "\0" in name:
        return "HDF5 names end at a NUL character"
    return None


def _check_group_names(layers: list, net, path: str) -> None:
    """Refuse layer names that HDF5 would read as paths, or cannot store, before anything is written.

    Why refuse rather than escape them: Caffe keys HDF5 weights by the raw
    layer name.  Its ``Net::ToHDF5`` aborts on a name such as GoogLeNet's
    ``conv1/7x7_s2`` (``H5Gcreate2`` finds no group ``conv1``), and its
    ``CopyTrainedLayersFromHDF5`` matches group names to layer names exactly
    and skips the others with an INFO log line, so an escaped name would load
    silently as a layer without weights.
    """
    problems = [(layer, _group_name_problem(layer.name)) for layer in layers]
    lists = {LAYER_FIELD: net.layer, LEGACY_LAYER_FIELD: net.layers}
    problems += [
        (layer, "a name that is not valid UTF-8 cannot name an HDF5 group")
        for layer in layers
        if isinstance(lists[layer.layer_field][layer.index].name, bytes)
    ]
    problems = [(layer, problem) for layer, problem in problems if problem]
    if problems:
        layer, problem = problems[0]
        more = f" (and {len(problems) - 1} more layers)" if len(problems) > 1 else ""
        raise ModelError(
            f"{problem}, so Caffe's HDF5 layout (data/<layer name>/<blob index>) cannot hold this layer{more}; "
            "write a binary caffemodel, which keeps any name",
            path=path,
            where=layer.label if layer.name else f"layer #{layer.index} (unnamed)",
        )


def write_hdf5(model: Model, path: str | os.PathLike, placement: Placement = NEW_FILE) -> None:
    """Write the model's weights as Caffe HDF5, atomically.

    A model with FLOAT16 blobs is refused: Caffe's HDF5 weights are float32 or
    float64, and widening would no longer give the values bit for bit.  FLOAT
    and DOUBLE ``raw_data`` become float32 and float64 datasets.
    """
    path = os.fspath(path)
    for payload in model.payloads:
        if payload.address.value_field == RAW_DATA_FIELD and payload.values.dtype.itemsize == 2:
            layer = model.layer_at[(payload.address.layer_field, payload.address.layer_index)]
            raise UsageError(
                "holds float16 values (FLOAT16 raw_data), and Caffe's HDF5 weights are float32 or float64; "
                "write a .caffemodel or .npz instead",
                path=path,
                where=f"{layer.label} blob {payload.address.blob_index}",
            )
    net = model.net
    values = model.payload_map()
    layers = [(LAYER_FIELD, index, layer) for index, layer in enumerate(net.layer)]
    layers += [(LEGACY_LAYER_FIELD, index, layer) for index, layer in enumerate(net.layers)]
    names = [layer.name for _, _, layer in layers]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ModelError(f"duplicate layer names {duplicates}: HDF5 weights are keyed by layer name", path=path)
    _check_group_names(model.layers, model.net, path)
    has_diff = any(netproto.blob_diff(blob) for _, _, layer in layers for blob in layer.blobs)
    import h5py

    try:
        with atomic_output(path, placement) as stream, h5py.File(stream, "w") as h5:
            data = h5.create_group("data")
            diff = h5.create_group("diff") if has_diff else None
            for layer_field, layer_index, layer in layers:
                data_group = data.create_group(layer.name)
                diff_group = diff.create_group(layer.name) if diff is not None else None
                for blob_index, blob in enumerate(layer.blobs):
                    shape = netproto.blob_shape(blob)
                    array = blob_values(values, layer_field, layer_index, blob_index)
                    if array is None:  # a blob without values is written as zeros of its shape
                        array = np.zeros(element_count(shape) or 0, dtype="<f4")
                    data_group.create_dataset(str(blob_index), data=array.reshape(shape))
                    blob_diff = netproto.blob_diff(blob)
                    if diff_group is not None:
                        diff_values = (
                            np.array(blob_diff[0], dtype=blob_diff[1])
                            if blob_diff
                            else np.zeros(array.size, array.dtype)
                        )
                        if diff_values.size != array.size:
                            raise ModelError(
                                f"holds {diff_values.size:,} diff values for a blob of shape {list(shape)}; "
                                "HDF5 stores the diff in the blob's shape",
                                path=path,
                                where=f"layer '{netproto.text(layer.name)}' blob {blob_index}",
                            )
                        diff_group.create_dataset(str(blob_index), data=diff_values.reshape(shape))
    except (OSError, SystemError) as exc:
        # h5py reports a failed flush (a full disk, a file-size limit) as SystemError, around the OSError.
        cause = exc.__cause__ or exc.__context__ or exc
        raise UsageError(f"cannot write HDF5 ({cause})", path=path) from None

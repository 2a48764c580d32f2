"""A train/val net's own data layers: which they are, and whether what they read is there.

Without ``--data`` the driver trains and tests on the net's own data layers,
as ``caffe train`` does: Caffe reads the LMDB, LevelDB, image list or HDF5
files and applies ``transform_param`` (scale, mean file or per-channel mean
values, crop, mirror) itself, batch by batch, so memory does not grow with
the dataset.  Caffe aborts the whole process on a missing or unreadable
source, so what Python can check is checked here first, each problem one
line naming the net file, the layer and the path (what only Caffe can tell,
a corrupt database or a crop larger than the images, is left to
:mod:`cmpstore.finetune.preflight`).

Caffe opens relative paths against the working directory of the process, not
the prototxt's folder; so does this module, so a net that works with
``caffe train`` from some folder works with ``cmpstore finetune`` from there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from ..caffe import netproto
from ..errors import UsageError, option

#: The data layers a train/val net reads with, and the parameter message of each.
PARAMS = {
    "Data": "data_param",
    "ImageData": "image_data_param",
    "HDF5Data": "hdf5_data_param",
    "WindowData": "window_data_param",
    "MemoryData": "memory_data_param",
    "DummyData": "dummy_data_param",
    "Input": "input_param",
}
#: Layers that read a file named by ``source``.
SOURCE_TYPES = ("Data", "ImageData", "HDF5Data", "WindowData")
_DATA_BACKENDS = {0: "LEVELDB", 1: "LMDB"}
_PHASE_NAMES = {netproto.Phase.Value("TRAIN"): "train", netproto.Phase.Value("TEST"): "test"}


@dataclass(frozen=True)
class DataLayer:
    """One data layer of the net and the phases it serves."""

    layer: object  # caffe_pb2.LayerParameter
    phases: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"layer '{self.layer.name}'"


def phases(layer) -> tuple[str, ...]:
    """The phases a layer is in: those its ``include`` rules name, else both."""
    named = tuple(_PHASE_NAMES[rule.phase] for rule in layer.include if rule.HasField("phase"))
    excluded = {_PHASE_NAMES[rule.phase] for rule in layer.exclude if rule.HasField("phase")}
    return tuple(phase for phase in (named or ("train", "test")) if phase not in excluded)


def data_layers(net) -> list[DataLayer]:
    """The net's data layers, each with its phases."""
    return [DataLayer(layer, phases(layer)) for layer in net.layer if layer.type in PARAMS]


def batch_size(layer, path: str) -> int:
    """The batch size a data layer reads; from its own type's parameter, never another's default."""
    where = f"layer '{layer.name}'"
    if layer.type == "Input":
        shapes = layer.input_param.shape
        if shapes and shapes[0].dim:
            return int(shapes[0].dim[0])
    elif layer.type == "DummyData":
        shapes = layer.dummy_data_param.shape
        if shapes and shapes[0].dim:
            return int(shapes[0].dim[0])
    elif layer.type in PARAMS:
        params = getattr(layer, PARAMS[layer.type])
        if params.batch_size:
            return int(params.batch_size)
    raise UsageError("cannot tell the batch size of this data layer", path=path, where=where)


def check_net_reads_its_data(net, path: str) -> None:
    """Refuse, before Caffe is touched, a net whose training or testing data cannot be read as it stands."""
    layers = data_layers(net)
    for phase in ("train", "test"):
        serving = [layer for layer in layers if phase in layer.phases]
        if not serving:
            raise UsageError(f"no data layer for the {phase.upper()} phase (Data, ImageData, HDF5Data, ...)", path=path)
        inputs = [layer for layer in serving if layer.layer.type in ("Input", "MemoryData", "DummyData")]
        if inputs:
            raise UsageError(
                f"a layer of type {inputs[0].layer.type} reads no data of its own: "
                f"give the data with {option('data')} (mnist, mnist5k or an .npz)",
                path=path,
                where=inputs[0].where,
            )
    for data_layer in layers:
        for problem in _source_problems(data_layer.layer):
            raise UsageError(problem, path=path, where=data_layer.where)


def _source_problems(layer) -> Iterator[str]:
    transform = layer.transform_param
    if transform.mean_file and not os.path.isfile(transform.mean_file):
        yield f"transform_param mean_file '{transform.mean_file}' does not exist"
    if layer.type == "Data":
        params = layer.data_param
        backend = _DATA_BACKENDS.get(params.backend, str(params.backend))
        yield from _database_problems(params.source, backend)
    elif layer.type == "ImageData":
        yield from _list_problems(layer.image_data_param.source, "image list", layer.image_data_param.root_folder)
    elif layer.type == "HDF5Data":
        yield from _list_problems(layer.hdf5_data_param.source, "HDF5 file list", "")
    elif layer.type == "WindowData":
        if not os.path.isfile(layer.window_data_param.source):
            yield f"window_data_param source '{layer.window_data_param.source}' does not exist"


def _database_problems(source: str, backend: str) -> Iterator[str]:
    if not source:
        yield "data_param has no source"
        return
    # An LMDB is a folder holding data.mdb; a LevelDB a folder holding CURRENT.
    marker = "data.mdb" if backend == "LMDB" else "CURRENT"
    if not os.path.isdir(source):
        yield f"data_param source '{source}' ({backend}) does not exist"
    elif not os.path.isfile(os.path.join(source, marker)):
        yield f"data_param source '{source}' is not an {backend} database (it has no {marker})"


def _list_problems(source: str, kind: str, root_folder: str) -> Iterator[str]:
    """A list file and every file it names, as Caffe's ImageData and HDF5Data layers read them."""
    if not source:
        yield f"the {kind} (source) is not set"
        return
    if not os.path.isfile(source):
        yield f"{kind} '{source}' does not exist"
        return
    with open(source, encoding="utf-8", errors="surrogateescape") as lines:
        entries = 0
        for number, line in enumerate(lines, start=1):
            line = line.strip()
            if not line:
                continue
            entries += 1
            # ImageData lines are "path label" (the label after the last space); HDF5Data lines a path.
            name = line.rsplit(" ", 1)[0] if kind == "image list" else line
            if not os.path.isfile(root_folder + name):
                yield f"{kind} '{source}' line {number}: '{root_folder + name}' does not exist"
                return
    if not entries:
        yield f"{kind} '{source}' names no files"

"""The file formats cmpstore reads and writes, in one registry (as onnx's serialization registry has them).

Each format has a name, the extensions that name it, a sniffer for a
file's first bytes, and a reader and a writer where it can be read or
written.  An input's format comes from its content (:func:`sniff`), an
output's from ``format=`` or its extension (:func:`for_output`); nothing
else dispatches on formats.

Examples
--------
>>> for_output("lenet.caffemodel.h5").name, for_output("weights.npz").name, for_output("lenet").name
('hdf5', 'npz', 'caffemodel')
>>> by_name("h5").name
'hdf5'
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import limits
from .atomic import Placement, atomic_output, write_chunks
from .caffe import caffemodel, hdf5
from .caffe.model import Model
from .cmps import container
from .errors import ModelError, UsageError, reading

#: Bytes a sniffer looks at.
HEAD_BYTES = 16


#: The most a pipe may carry: a model at the format's decoded-size limit, plus its framing.
MAX_STREAM_BYTES = limits.MAX_TOTAL_BYTES + (1 << 24)


@dataclass(frozen=True)
class Source:
    """A file a command reads: its path, and, for a pipe or device that can be read only once, its bytes.

    ``<(cat model.cmps)`` or ``/dev/stdin`` is read whole, once, so that sniffing its
    first bytes does not take them from the reader.
    """

    path: str
    data: bytes | None = None

    @classmethod
    def open(cls, path: str | os.PathLike) -> Source:
        path = os.fspath(path)
        try:
            mode = os.stat(path).st_mode
            if stat.S_ISDIR(mode):
                raise ModelError("is a directory, not a model file", path=path)
            if stat.S_ISREG(mode):
                return cls(path)
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                # /dev/zero or a disk: no size, and no end a reader would reach before memory runs out.
                raise ModelError("is a device, not a model file; name a file or a pipe", path=path)
            with open(path, "rb") as stream:
                data = stream.read(MAX_STREAM_BYTES + 1)
            if len(data) > MAX_STREAM_BYTES:
                raise ModelError(
                    f"holds more than {MAX_STREAM_BYTES:,} bytes, more than any model cmpstore reads", path=path
                )
            return cls(path, data)
        except FileNotFoundError:
            raise ModelError("no such file", path=path) from None
        except OSError as exc:
            raise ModelError(f"cannot read ({exc.strerror})", path=path) from None

    def head(self) -> bytes:
        if self.data is not None:
            return self.data[:HEAD_BYTES]
        try:
            with open(self.path, "rb") as stream:
                return stream.read(HEAD_BYTES)
        except OSError as exc:
            raise ModelError(f"cannot read ({exc.strerror})", path=self.path) from None

    def read(self) -> bytes:
        """All of its bytes (a ModelError for none)."""
        buf = self.data
        if buf is None:
            try:
                with open(self.path, "rb") as stream:
                    buf = stream.read()
            except OSError as exc:
                raise ModelError(f"cannot read ({exc.strerror})", path=self.path) from None
        if not buf:
            raise ModelError("empty file", path=self.path)
        return buf


@dataclass(frozen=True)
class FileFormat:
    """One file format: how it is named and recognised, and how to read and write a model in it."""

    name: str
    extensions: tuple[str, ...]  # longest first where one ends another (".caffemodel.h5" before ".h5")
    description: str
    sniff: Callable[[bytes], bool] | None = None
    read: Callable[[Source], Model] | None = None
    write: Callable[[Model, str, Placement], None] | None = None
    aliases: tuple[str, ...] = ()


def _read_caffemodel(source: Source) -> Model:
    path = source.path
    with reading(path, ModelError):
        buf = source.read()
        try:
            model = caffemodel.split_caffemodel(buf, path)
        except ModelError:
            if _looks_like_text(buf):
                raise ModelError(
                    "this is a text file (a prototxt?); cmpstore needs binary .caffemodel weights", path=path
                ) from None
            raise
        model.check_shapes(path)
        model.check_sizes(path)
        return model


def _read_hdf5(source: Source) -> Model:
    with reading(source.path, ModelError):
        model = hdf5.read_hdf5(source.path, source.data)
        model.check_sizes(source.path)
        return model


def _read_cmps(source: Source) -> Model:
    from .cmps.reader import open_cmps

    with reading(source.path):
        return open_cmps(source.data if source.data is not None else source.path, source.path).model()


def _write_caffemodel(model: Model, path: str, placement: Placement) -> None:
    write_chunks(path, caffemodel.join_caffemodel(model), placement)


def _write_npz(model: Model, path: str, placement: Placement) -> None:
    weights = model.weights_by_layer()
    arrays = {f"{name}/{index}": blob for name, blobs in weights.items() for index, blob in enumerate(blobs)}
    with atomic_output(path, placement) as stream:
        np.savez(stream, **arrays)


def _write_cmps(model: Model, path: str, placement: Placement) -> None:
    from .cmps.writer import encode_model

    write_chunks(path, [encode_model(model)], placement)


CAFFEMODEL = FileFormat(
    "caffemodel",
    (".caffemodel",),
    "binary Caffe weights (NetParameter)",
    read=_read_caffemodel,
    write=_write_caffemodel,
)
HDF5 = FileFormat(
    "hdf5",
    (".caffemodel.h5", ".h5", ".hdf5"),
    "Caffe HDF5 weights (data/<layer>/<blob>)",
    sniff=lambda head: head.startswith(hdf5.HDF5_SIGNATURE),
    read=_read_hdf5,
    write=hdf5.write_hdf5,
    aliases=("h5",),
)
NPZ = FileFormat(
    "npz", (".npz",), "numpy arrays named <layer>/<blob index>, for deployment outside Caffe", write=_write_npz
)
CMPS = FileFormat(
    "cmps",
    (container.FILE_EXTENSION,),
    "cmpstore's compressed format (docs/FORMAT.md)",
    sniff=container.looks_like_container,
    read=_read_cmps,
    write=_write_cmps,
)
#: The Deep Compression authors' released format; reading it needs the deploy prototxt too
#: (:func:`cmpstore.caffe.han.import_han`), so it has no reader of the plain kind.
HAN = FileFormat("han", (".net",), "the Deep Compression authors' released .net layout")

FORMATS = {fmt.name: fmt for fmt in (CAFFEMODEL, HDF5, NPZ, CMPS, HAN)}


def by_name(name: str) -> FileFormat:
    """The format called ``name`` (or one of its aliases, such as ``h5``)."""
    for fmt in FORMATS.values():
        if name == fmt.name or name in fmt.aliases:
            return fmt
    raise UsageError(f"unknown format {name!r}; use {', '.join(f.name for f in FORMATS.values() if f.write)}")


def sniff(source: Source) -> FileFormat:
    """An input's format, from its first bytes; a binary caffemodel has no magic, so it is the default."""
    head = source.head()
    for fmt in FORMATS.values():
        if fmt.sniff is not None and fmt.sniff(head):
            return fmt
    return CAFFEMODEL


def for_output(path: str | os.PathLike, name: str | None = None) -> FileFormat:
    """The format to write ``path`` in: ``name`` if given, else by extension, else a binary caffemodel."""
    if name is not None:
        fmt = by_name(name)
    else:
        text = os.fspath(path)
        fmt = next((f for f in FORMATS.values() if f.write and text.endswith(f.extensions)), CAFFEMODEL)
    if fmt.write is None:
        raise UsageError(f"cmpstore cannot write {fmt.description}", path=os.fspath(path))
    return fmt


def default_output(source: str | os.PathLike, fmt: FileFormat) -> str:
    """The output a command writes when none is named: ``source`` with ``fmt``'s extension instead of its own.

    >>> default_output("lenet.caffemodel", CMPS), default_output("models/lenet.cmps", CAFFEMODEL)
    ('lenet.cmps', 'models/lenet.caffemodel')
    """
    source = os.fspath(source)
    known = sorted({ext for f in FORMATS.values() for ext in f.extensions}, key=len, reverse=True)
    stem = next((source[: -len(ext)] for ext in known if source.endswith(ext)), source)
    return stem + fmt.extensions[0]


def _looks_like_text(buf: bytes) -> bool:
    sample = buf[:4096]
    return bool(sample) and all(byte in b"\t\n\r" or 32 <= byte < 127 for byte in sample)

"""Reading a ``.cmps`` file: one handle, :func:`open_cmps`, over which every consumer loops.

The handle checks the header, every section's checksum and bounds, the NETP
section and every BLOB head against the net, before any weight is decoded;
the blobs are then named entries (address, layer, codec, count, offset,
size) that :meth:`CmpsFile.decode`, :meth:`CmpsFile.decode_into` and
:meth:`CmpsFile.windows` decode on demand, as safetensors' ``safe_open``
does.  A file is memory-mapped, so opening a large one costs no read.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .. import limits
from ..caffe import checker, netproto
from ..caffe.caffemodel import with_raw_values_taken_out
from ..caffe.model import VALUE_FIELDS, BlobAddress, Model, Payload
from ..caffe.netproto import LayerInfo
from ..codecs import BlobCodec, BlobStats, codec_for_id
from ..errors import FormatError, ModelError
from ..progress import silent
from ..streams.varint import Reader
from . import container
from .sections import (
    FLOAT_RAW_DATA_VERSION,
    OPAQUE_FIELDS_VERSION,
    raw_types_taken_out,
    read_blob_address,
    read_codec_and_count,
    read_net,
    value_field_version,
)

#: Values per window when a blob is decoded only to check it: bounded memory for any blob.
CHECK_WINDOW = 1 << 20


@dataclass(frozen=True)
class BlobEntry:
    """One blob of a ``.cmps`` file, located and checked but not decoded."""

    address: BlobAddress
    layer: LayerInfo
    codec: BlobCodec
    count: int
    offset: int  # where its section starts in the file
    size: int  # bytes of its section on disk, framing included
    payload: memoryview  # the codec's payload

    @property
    def dtype(self) -> np.dtype:
        return self.layer.value_dtype(self.address.blob_index, self.address.value_field)

    @property
    def name(self) -> str:
        """``"conv1 blob 0"``: how progress lines and reports name a blob."""
        return f"{self.layer.name} blob {self.address.blob_index}"

    @property
    def where(self) -> str:
        """``"layer 'conv1' blob 0"``: how error messages name a blob."""
        return f"{self.layer.label} blob {self.address.blob_index}"


class CmpsFile:
    """A checked ``.cmps`` file: its net and its blob entries (see :func:`open_cmps`)."""

    def __init__(self, buf, path: str | None = None, max_output_bytes: int | None = None):
        self.path = path
        self._mapping = buf
        self.buffer = memoryview(buf)
        sections = container.read_sections(self.buffer)
        self.version, _ = container.read_version(self.buffer)
        if not sections or sections[0].kind != container.NET:
            raise FormatError("the first section must be the net (NETP)")
        net_section = sections[0]
        label = net_section.label(0)
        self.source_format, self.skeleton = read_net(net_section.payload, label, max_output_bytes)
        try:
            self.net, conflicts = netproto.parse_skeleton_and_conflicts(self.skeleton)
        except ModelError as exc:
            raise FormatError(f"{label}: {exc.problem}") from None
        if conflicts and self.version < OPAQUE_FIELDS_VERSION:
            raise FormatError(f"{label}: {conflicts[0]}, which needs a later format version than {self.version}")
        try:
            checker.check_weightless(self.net, FormatError, raw_types_taken_out(self.version))
        except FormatError as exc:
            raise FormatError(exc.problem, where=f"{label}, {exc.where}") from None
        self.layers = netproto.layer_infos(self.net)
        #: Bytes of the header and the NETP section: what a report counts as structure.
        self.header_and_net_bytes = container.HEADER_SIZE + net_section.size_on_disk
        self.entries = self._entries(sections)
        #: The skeleton plus every blob's values (see :func:`cmpstore.caffe.checker.check_sizes`).
        self.decoded_bytes = checker.check_sizes(
            self.layers, (entry.address for entry in self.entries), len(self.skeleton), FormatError, max_output_bytes
        )

    def _entries(self, sections: list[container.Section]) -> list[BlobEntry]:
        layers = {(info.layer_field, info.index): info for info in self.layers}
        entries = []
        previous = None
        for number, section in enumerate(sections[1:], start=1):
            label = section.label(number)
            if section.kind != container.BLOB:
                raise FormatError(f"{label}: only one NETP section may appear, and first")
            reader = Reader(section.payload)
            address = read_blob_address(reader, label)
            layer = layers.get((address.layer_field, address.layer_index))
            if layer is None or address.blob_index >= len(layer.blob_shapes) or address.value_field not in VALUE_FIELDS:
                raise FormatError(f"{label}: refers to a blob the net does not have ({address})")
            if previous is not None and address <= previous:
                raise FormatError(f"{label}: blob sections out of order or repeated")
            previous = address
            where = f"{label}, {layer.label} blob {address.blob_index}"
            try:
                checker.check_value_field(layer, address.blob_index, address.value_field, FormatError)
            except FormatError as exc:
                raise FormatError(f"{label}, {exc}") from None
            needed, _ = value_field_version(layer, address)
            if needed > self.version:
                raise FormatError(
                    f"{label}: value field {address.value_field} needs a later format version than {self.version}"
                )
            dtype = layer.value_dtype(address.blob_index, address.value_field)
            codec_id, count = read_codec_and_count(reader, dtype.itemsize, where)
            try:
                codec = codec_for_id(codec_id)
            except FormatError as exc:
                raise exc.located(where=where) from None
            if codec.format_version > self.version:
                raise FormatError(
                    f"codec {codec_id} ({codec.name}) needs format version {codec.format_version}, "
                    f"but the file is version {self.version}",
                    where=where,
                )
            try:
                checker.check_value_count(layer, address.blob_index, count, FormatError)
            except FormatError as exc:
                raise FormatError(f"{label}, {exc}") from None
            entries.append(
                BlobEntry(
                    address, layer, codec, count, section.offset, section.size_on_disk, section.payload[reader.pos :]
                )
            )
        return entries

    @property
    def size(self) -> int:
        """Bytes of the whole file."""
        return len(self.buffer)

    def close(self) -> None:
        """Unmap the file now, rather than whenever the last reference to it goes.

        The entries go with it.  Decoded arrays are copies and stay valid; while
        a caller still holds a view of the file (a raw blob's values), the
        mapping stays until that view goes, as it would without ``close``.
        """
        entries, self.entries = self.entries, []
        for entry in entries:
            entry.payload.release()
        self.buffer.release()
        if isinstance(self._mapping, mmap.mmap):
            with contextlib.suppress(BufferError):
                self._mapping.close()
        self._mapping = None

    def __enter__(self) -> CmpsFile:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def decode(self, entry: BlobEntry) -> np.ndarray:
        """The blob's values (a fresh array, or for a raw blob a read-only view of the file)."""
        return entry.codec.decode(entry.payload, entry.count, entry.dtype, entry.where)

    def decode_into(self, entry: BlobEntry, out: np.ndarray, start: int = 0) -> np.ndarray:
        """Write the blob's values into ``out[start : start + entry.count]`` (``out`` 1-D, of its dtype)."""
        target = out[start : start + entry.count]
        return entry.codec.decode(entry.payload, entry.count, entry.dtype, entry.where, out=target)

    def windows(self, entry: BlobEntry, window: int) -> Iterator[tuple[int, np.ndarray]]:
        """The blob's values as ``(start, values)`` pieces of at most ``window`` values (see BlobCodec.windows)."""
        return entry.codec.windows(entry.payload, entry.count, entry.dtype, entry.where, window)

    def check(self, entry: BlobEntry) -> None:
        """Decode the blob, window by window, only to find out that it decodes (what decode would refuse)."""
        for _ in self.windows(entry, CHECK_WINDOW):
            pass

    def describe(self, entry: BlobEntry) -> BlobStats:
        """What the blob's payload holds, from its headers where the codec allows."""
        return entry.codec.describe(entry.payload, entry.count, entry.dtype, entry.where)

    def description(self, path: str | None = None) -> dict:
        """The header and sections, as ``cmpstore inspect --json`` prints them, without decoding any weights."""
        listed = [
            {
                "number": 0,
                "kind": "NETP",
                "offset": container.HEADER_SIZE,
                "bytes": self.header_and_net_bytes - container.HEADER_SIZE,
                "source_format": self.source_format.name.lower(),
                "skeleton_bytes": len(self.skeleton),
                "layers": len(self.layers),
            }
        ]
        for number, entry in enumerate(self.entries, start=1):
            listed.append(
                {
                    "number": number,
                    "kind": "BLOB",
                    "offset": entry.offset,
                    "bytes": entry.size,
                    "layer": entry.layer.name,
                    "type": entry.layer.type,
                    "blob": entry.address.blob_index,
                    "dtype": entry.dtype.name,
                    "values": entry.count,
                    "codec": entry.codec.name,
                }
            )
        return {"file": path, "bytes": self.size, "version": self.version, "sections": listed}

    def model(self, progress: Callable[[str, str], None] = silent) -> Model:
        """Every blob decoded: the model, bit for bit.

        A file before format version 4 kept the ``raw_data`` of FLOAT and
        DOUBLE blobs in its skeleton; the model has them as payloads, as a
        model read from the caffemodel itself does.
        """
        payloads = []
        for entry in self.entries:
            payloads.append(Payload(entry.address, self.decode(entry)))
            progress(entry.name, f"{entry.codec.name}, {entry.count:,} values")
        model = Model(self.skeleton, payloads, self.source_format)
        return model if self.version >= FLOAT_RAW_DATA_VERSION else with_raw_values_taken_out(model)


def open_cmps(source, path: str | None = None, *, max_output_bytes: int | None = None) -> CmpsFile:
    """Open a ``.cmps`` file (a path) or its bytes, and check everything but the blob payloads.

    Errors are :class:`~cmpstore.errors.FormatError`; the caller names the file
    (see :func:`cmpstore.errors.reading`).  Besides the format's limits
    (:mod:`cmpstore.limits`), ``max_output_bytes`` refuses a file whose
    decoded size (:attr:`CmpsFile.decoded_bytes`: the net plus every blob's
    values) would exceed it, before anything is decoded.

    Use it in a ``with`` block (or call :meth:`CmpsFile.close`) to unmap the
    file as soon as it is no longer needed, as safetensors' ``safe_open``.

    Examples
    --------
    >>> from cmpstore.cmps.writer import encode_model
    >>> from cmpstore.synthetic import build_model
    >>> cmps = open_cmps(encode_model(build_model(seed=0)))
    >>> [(entry.name, entry.codec.name) for entry in cmps.entries][:2]
    [('conv1 blob 0', 'sparse'), ('conv1 blob 1', 'raw')]
    >>> cmps.decode(cmps.entries[1]).shape
    (20,)
    """
    max_output_bytes = limits.checked_max_output_bytes(max_output_bytes)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return CmpsFile(source, path, max_output_bytes)
    path = os.fspath(source)
    return CmpsFile(_mapped(path), path, max_output_bytes)


def _mapped(path: str):
    """The file's bytes: memory-mapped where it is a regular file, read otherwise (a pipe, /dev/stdin)."""
    with open(path, "rb") as stream:
        if stat.S_ISREG(os.fstat(stream.fileno()).st_mode) and os.fstat(stream.fileno()).st_size:
            return mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        return stream.read()

"""Decode a ``.cmps`` file straight into a binary caffemodel on disk.

Why not decode to a :class:`~cmpstore.caffe.model.Model` and write that: for a
VGG-16-sized model, allocating and scattering into 550 MB of fresh arrays,
then copying them to the file, took as long as the entropy decoding itself.
Here the file's layout is computed from the skeleton first
(:func:`cmpstore.caffe.caffemodel.caffemodel_layout`); each blob is then decoded
on its own and written at its offset with ``pwrite``, a sparse blob through
one small reused buffer that is zeroed and filled with the entries of each
window in turn.  Blobs are independent, so large models spread them over
worker processes (forked, so they share the input bytes and the output
file); small ones are written in-process.  The output is written atomically:
any error leaves no file behind.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable

import numpy as np

from ..atomic import atomic_output
from ..caffe import netproto
from ..caffe.caffemodel import caffemodel_layout
from ..caffe.model import PAYLOAD_DTYPE
from ..codecs import SparseCodec, codec_for_id
from ..errors import UsageError
from ..progress import silent
from .encoding import read_container

#: Bytes of dense output per pwrite from a sparse blob: large enough to amortise the call, small enough for cache.
WINDOW_BYTES = 1 << 22
#: Models whose dense size is below this are written in-process (starting workers would cost more).
PARALLEL_ABOVE_BYTES = 1 << 26

# What forked workers inherit: the input bytes, the blob table, the output descriptor and offsets.
_shared: dict = {}


def write_caffemodel(
    buf,
    output: str | os.PathLike,
    *,
    deploy: bool = False,
    workers: int | None = None,
    progress: Callable[[str, str], None] = silent,
) -> int:
    """Decode the ``.cmps`` bytes ``buf`` into the binary caffemodel ``output``; return its size.

    Parameters
    ----------
    deploy : bool
        Make Cmp layers stock first (see :func:`cmpstore.caffe.netproto.to_deploy`).
    workers : int, optional
        Processes to decode blobs in; default: the CPUs, for models above
        64 MiB where ``fork`` is available, else 1 (in-process).
    """
    contents = read_container(buf)
    skeleton = netproto.deploy_skeleton(contents.skeleton) if deploy else contents.skeleton
    payload_bytes = {
        address: count * PAYLOAD_DTYPE[address.value_field].itemsize for address, _, _, count, _, _ in contents.blobs
    }
    layout = caffemodel_layout(skeleton, payload_bytes)
    offsets = {piece: offset for offset, _, piece in layout if not isinstance(piece, bytes)}
    total = sum(size for _, size, _ in layout)
    tasks = sorted(range(len(contents.blobs)), key=lambda i: -contents.blobs[i][3])  # largest first
    if workers is None:
        can_fork = "fork" in multiprocessing.get_all_start_methods()
        workers = min(os.cpu_count() or 1, len(tasks)) if can_fork and total > PARALLEL_ABOVE_BYTES else 1
    try:
        with atomic_output(output) as stream:
            descriptor = stream.fileno()
            os.ftruncate(descriptor, total)
            for offset, _, piece in layout:
                if isinstance(piece, bytes):
                    os.pwrite(descriptor, piece, offset)
            _shared.update(blobs=contents.blobs, descriptor=descriptor, offsets=offsets)
            try:
                if workers <= 1:
                    for index in tasks:
                        progress(*_write_blob(index))
                else:
                    from concurrent.futures import ProcessPoolExecutor  # only large models pay for importing it

                    context = multiprocessing.get_context("fork")
                    with ProcessPoolExecutor(workers, mp_context=context, initializer=_ignore_interrupts) as pool:
                        for done in pool.map(_write_blob, tasks):
                            progress(*done)
            finally:
                _shared.clear()
    except OSError as exc:
        raise UsageError(f"cannot write ({exc.strerror})", path=os.fspath(output)) from None
    return total


def _ignore_interrupts() -> None:
    """Workers leave Ctrl-C to the parent, which stops the pool and removes the partial file."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _write_blob(index: int) -> tuple[str, str]:
    address, layer, codec_id, count, body, _ = _shared["blobs"][index]
    descriptor, offset = _shared["descriptor"], _shared["offsets"][address]
    dtype = PAYLOAD_DTYPE[address.value_field]
    where = f"{layer.label} blob {address.blob_index}"
    codec = codec_for_id(codec_id)
    if isinstance(codec, SparseCodec):
        positions, values = codec.decode_entries(body, count, dtype, where)
        _write_sparse(descriptor, offset, count, dtype, positions, values)
    else:
        _write_all(descriptor, codec.decode(body, count, dtype, where), offset)
    return f"{layer.name} blob {address.blob_index}", f"{codec.name}, {count:,} values"


def _write_sparse(descriptor: int, offset: int, count: int, dtype, positions: np.ndarray, values: np.ndarray) -> None:
    window = WINDOW_BYTES // dtype.itemsize
    buffer = np.zeros(min(window, count), dtype=dtype)
    starts = np.arange(0, count, window, dtype=np.int64)
    bounds = np.searchsorted(positions, np.append(starts, count))
    for number, start in enumerate(starts.tolist()):
        part = buffer[: min(window, count - start)]
        part.fill(0)
        low, high = bounds[number], bounds[number + 1]
        part[positions[low:high] - start] = values[low:high]
        _write_all(descriptor, part, offset + start * dtype.itemsize)


def _write_all(descriptor: int, values: np.ndarray, offset: int) -> None:
    data = memoryview(values).cast("B")
    while data:
        written = os.pwrite(descriptor, data, offset)
        data, offset = data[written:], offset + written

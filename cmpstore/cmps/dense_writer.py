"""Decode a ``.cmps`` file straight into a binary caffemodel on disk.

Why not decode to a :class:`~cmpstore.caffe.model.Model` and write that: for a
VGG-16-sized model, allocating and scattering into 550 MB of fresh arrays,
then copying them to the file, took as long as the entropy decoding itself.
Here the file's layout is computed from the skeleton first
(:func:`cmpstore.caffe.caffemodel.caffemodel_layout`); each blob, or each
segment of a segmented one (codec 6), is then decoded on its own, window by
window (a sparse one through one small reused buffer), and written at its
offset with ``pwrite``.  Blobs and segments are independent, so large models
spread them over worker processes (forked, so they share the mapped input
and the output file); small ones are written in-process.  The output is written atomically: any
error leaves no file behind.  The workers never outlive the write: any
error or signal in the parent kills them, a worker that dies ends the write
with an error, and on Linux each worker asks the kernel to kill it if the
parent dies first, even by SIGKILL.
"""

from __future__ import annotations

import itertools
import mmap
import multiprocessing
import os
import select
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..atomic import NEW_FILE, Placement, atomic_output
from ..caffe import netproto
from ..caffe.caffemodel import caffemodel_layout
from ..codecs.sparse import SparseCodec
from ..errors import CmpstoreError, UsageError
from ..progress import silent
from .reader import CmpsFile

#: Bytes of dense output per pwrite: large enough to amortise the call, small enough for cache;
#: a segment (2^22 values) of float32 is one window, so its positions need no shifting.
WINDOW_BYTES = 1 << 24
#: Models whose dense size is below this are written in-process (starting workers would cost more).
PARALLEL_ABOVE_BYTES = 1 << 26


@dataclass(frozen=True)
class _Write:
    """One call's decode: the open file, the output descriptor, each blob's offset in the output and its parts."""

    cmps: CmpsFile
    descriptor: int
    offsets: dict
    parts: list  # per entry, the runs of its values that decode on their own (Part)

    @cached_property
    def scratch(self) -> np.ndarray:
        """This process's window buffer, made on first use and reused for every blob, so that each
        does not fault in fresh pages (each forked worker makes its own)."""
        return np.empty(WINDOW_BYTES, dtype=np.uint8)

    def part(self, task: tuple[int, int]) -> tuple[str, str]:
        """Decode one part of one blob into its place; what the progress line says of it."""
        index, number = task
        entry = self.cmps.entries[index]
        part = self.parts[index][number]
        itemsize = entry.dtype.itemsize
        # An empty blob has nothing to write, and no place in the layout to write it at.
        base = self.offsets.get(entry.address, 0) + part.start * itemsize
        window = WINDOW_BYTES // itemsize
        for start, values in part.codec.windows(part.payload, part.count, entry.dtype, part.what, window, self.scratch):
            _write_all(self.descriptor, values, base + start * itemsize)
        if len(self.parts[index]) == 1:
            return entry.name, f"{entry.codec.name}, {entry.count:,} values"
        return f"{entry.name} part {number + 1}/{len(self.parts[index])}", f"{part.codec.name}, {part.count:,} values"


# The writes in progress, by a number unique to each call: forked workers inherit this table and
# find their call's write in it, while threads decoding at once each keep their own entry.
_writes: dict[int, _Write] = {}
_writes_lock = threading.Lock()
_write_numbers = itertools.count()


def write_caffemodel(
    cmps: CmpsFile,
    output: str | os.PathLike,
    placement: Placement = NEW_FILE,
    *,
    deploy: bool = False,
    workers: int | None = None,
    progress: Callable[[str, str], None] = silent,
) -> int:
    """Decode ``cmps`` into the binary caffemodel ``output``; return its size.

    Parameters
    ----------
    deploy : bool
        Make Cmp layers stock first (see :func:`cmpstore.caffe.netproto.to_deploy`).
    workers : int, optional
        Processes to decode blobs in; default: the CPUs, for models above
        64 MiB where ``fork`` is available, else 1 (in-process).
    """
    try:
        with atomic_output(output, placement) as stream:
            return _fill(stream.fileno(), cmps, deploy, workers, progress, os.fspath(output))
    except OSError as exc:
        raise UsageError(f"cannot write ({exc.strerror})", path=os.fspath(output)) from None


def _fill(descriptor: int, cmps: CmpsFile, deploy: bool, workers: int | None, progress, label: str) -> int:
    """Write the caffemodel of ``cmps`` into the file ``descriptor``, each blob at its offset; return its size."""
    skeleton = netproto.deploy_skeleton(cmps.skeleton) if deploy else cmps.skeleton
    layout = caffemodel_layout(skeleton, {entry.address: entry.count * entry.dtype.itemsize for entry in cmps.entries})
    offsets = {piece: offset for offset, _, piece in layout if not isinstance(piece, bytes)}
    total = sum(size for _, size, _ in layout)
    # A segmented blob is many tasks, so one huge layer does not leave the other workers idle.
    parts = [entry.codec.parts(entry.payload, entry.count, entry.where) for entry in cmps.entries]
    tasks = [(index, number) for index, runs in enumerate(parts) for number in range(len(runs))]
    tasks.sort(key=lambda task: -parts[task[0]][task[1]].count)  # largest first
    workers = worker_count(workers, len(tasks), total)
    os.ftruncate(descriptor, total)
    for offset, _, piece in layout:
        if isinstance(piece, bytes):
            os.pwrite(descriptor, piece, offset)
    write = _Write(cmps, descriptor, offsets, parts)
    if workers <= 1:
        for task in tasks:
            progress(*write.part(task))
        return total
    with _writes_lock:
        number = next(_write_numbers)
        _writes[number] = write
    try:
        _write_in_workers(workers, [(number, task) for task in tasks], progress, label)
    finally:
        with _writes_lock:
            del _writes[number]
    return total


#: Seconds between looks at the workers while waiting for a blob.
_WORKER_POLL_SECONDS = 0.5


def _write_in_workers(workers: int, tasks: list, progress, output: str) -> None:
    """Write the blobs in forked workers; a worker that dies is an error, never a wait forever.

    Each worker has a pipe of its own both ways: the parent hands it one
    blob or segment (largest first), and the next when it reports that one
    written, so a worker that drew a huge blob that is not segmented (one
    from a file of format version 4 or earlier: VGG's fc6 is three quarters
    of the model) is not also dealt half of the rest.  No queue or lock is shared,
    so a worker killed at any moment (the OOM killer's SIGKILL, a SIGBUS
    from an input truncated while mapped, an abort) cannot leave one held.
    ``multiprocessing.Pool`` instead replaces a dead worker and loses its
    task, and can hang in ``terminate`` on a queue lock the dead worker
    held.  The parent waits in short steps, so its signal handlers run; on
    any exception, Ctrl-C and SIGTERM included, every worker is killed.
    """
    context = multiprocessing.get_context("fork")
    pending = list(reversed(tasks))  # popped from the end: largest first
    children: list[tuple[multiprocessing.Process, object]] = []
    try:
        for _ in range(min(workers, len(tasks))):
            parent_end, child_end = context.Pipe(duplex=True)
            child = context.Process(target=_worker_main, args=(child_end,), daemon=True)
            child.start()
            child_end.close()
            parent_end.send(pending.pop())
            children.append((child, parent_end))
        # One poll object for the whole write: no objects made and destroyed while waiting, as
        # multiprocessing.connection.wait makes them, so a signal's exception cannot land in a
        # destructor, where Python would print and drop it.
        poller = select.poll()
        owner = {}
        for child, connection in children:
            for descriptor in (connection.fileno(), child.sentinel):
                poller.register(descriptor, select.POLLIN)
                owner[descriptor] = (child, connection)
        running = len(children)
        while running:
            for descriptor, _ in poller.poll(int(_WORKER_POLL_SECONDS * 1000)):
                if descriptor not in owner:
                    continue
                child, connection = owner[descriptor]
                finished = _drain(connection, progress, pending)
                if finished or descriptor == child.sentinel:
                    child.join()
                    if child.exitcode != 0:
                        raise UsageError(f"a decode worker {_death(child.exitcode)}", path=output)
                    for done in (connection.fileno(), child.sentinel):
                        poller.unregister(done)
                        del owner[done]
                    running -= 1
    finally:
        for child, connection in children:
            if child.is_alive():
                child.kill()
            child.join()
            connection.close()


def _drain(connection, progress, pending: list) -> bool:
    """Report what a worker has written and hand it the next blob; True once it has been told to stop."""
    while connection.poll():
        try:
            kind, *rest = connection.recv()
        except EOFError:
            return False
        if kind == "error":
            raise rest[0]
        progress(*rest)
        if pending:
            connection.send(pending.pop())
        else:
            connection.send(None)
            return True
    return False


def _worker_main(connection) -> None:
    _start_worker()
    try:
        while (task := connection.recv()) is not None:
            connection.send(("done", *_write_blob(task)))
    except (CmpstoreError, OSError, MemoryError) as exc:  # a blob that does not decode, a full disk: raised there
        connection.send(("error", exc))
    except EOFError:  # the parent has gone
        pass


def _death(exitcode: int) -> str:
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with status {exitcode}"


def caffemodel_buffer(cmps: CmpsFile, *, deploy: bool = False, workers: int | None = None) -> np.ndarray:
    """Decode ``cmps`` into the bytes of its binary caffemodel, in memory: one uint8 array.

    A model that gets more than one worker (``workers`` as in
    :func:`write_caffemodel`) is written as :func:`write_caffemodel` writes
    it, into an anonymous in-memory file (Linux's ``memfd``) that the array
    then maps: so the same forked workers decode it in parallel, and the
    dense model is never assembled from pieces and copied again.  Otherwise
    (small models, or no memfd) the blobs are decoded in this process, each
    straight into its place in one array: for LeNet the memfd's writes
    took a fifth of the decode.
    """
    if hasattr(os, "memfd_create") and worker_count(workers, len(cmps.entries), cmps.decoded_bytes) > 1:
        descriptor = os.memfd_create("cmpstore-caffemodel")
        try:
            total = _fill(descriptor, cmps, deploy, workers, silent, cmps.path or "<memory>")
            if total == 0:
                return np.zeros(0, dtype=np.uint8)
            return np.frombuffer(mmap.mmap(descriptor, total, access=mmap.ACCESS_READ), dtype=np.uint8)
        finally:
            os.close(descriptor)
    return _scattered_buffer(cmps, deploy)


def _scattered_buffer(cmps: CmpsFile, deploy: bool) -> np.ndarray:
    """:func:`caffemodel_buffer` in this process: a sparse blob only scatters its entries into lazily zeroed pages."""
    skeleton = netproto.deploy_skeleton(cmps.skeleton) if deploy else cmps.skeleton
    layout = caffemodel_layout(skeleton, {entry.address: entry.count * entry.dtype.itemsize for entry in cmps.entries})
    total = sum(size for _, size, _ in layout)
    buffer = np.zeros(total, dtype=np.uint8)
    places = {}
    for offset, size, piece in layout:
        if isinstance(piece, bytes):
            buffer[offset : offset + size] = np.frombuffer(piece, dtype=np.uint8)
        else:
            places[piece] = offset
    for entry in cmps.entries:
        start = places.get(entry.address)
        if start is None:  # an empty blob: nothing to place
            continue
        values = buffer[start : start + entry.count * entry.dtype.itemsize].view(entry.dtype)
        if isinstance(entry.codec, SparseCodec):
            positions, entry_values = entry.codec.decode_entries(entry.payload, entry.count, entry.dtype, entry.where)
            values[positions] = entry_values
        else:
            cmps.decode_into(entry, values)
    return buffer


def _start_worker() -> None:
    """Signals are the parent's to handle: it stops the pool and removes the partial file."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGHUP):  # the parent's handlers came with the fork
        signal.signal(signum, signal.SIG_DFL)
    _die_with_parent()


def _die_with_parent() -> None:
    """On Linux, have the kernel send SIGKILL to this worker when its parent exits, however it exits."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's terminate() is the guarantee
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def worker_count(requested: int | None, blobs: int, dense_bytes: int) -> int:
    """The processes to decode ``blobs`` in: ``requested`` bounded by the CPUs and the blobs.

    By default a model above :data:`PARALLEL_ABOVE_BYTES` gets one per CPU,
    where ``fork`` exists and this is the only thread: forking a process in
    which other threads run can copy a lock one of them holds, and the child
    then waits on it forever.
    """
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise UsageError(f"workers must be a whole number of at least 1, got {requested!r}")
        return max(1, min(requested, os.cpu_count() or 1, blobs))
    can_fork = "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1
    if not can_fork or dense_bytes <= PARALLEL_ABOVE_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, blobs))


def _write_blob(task: tuple[int, tuple[int, int]]) -> tuple[str, str]:
    number, part = task
    return _writes[number].part(part)


def _write_all(descriptor: int, values: np.ndarray, offset: int) -> None:
    data = memoryview(np.ascontiguousarray(values)).cast("B")
    while data:
        written = os.pwrite(descriptor, data, offset)
        data, offset = data[written:], offset + written

"""Atomic output files: write beside the target, then rename into place.

A failure, an interrupt or a killed process leaves either the old file or
none, never a partial one.  There is no fsync before the rename (as with
zstd or xz): it would double the time to write a large model, and guarding
against power loss is left to the filesystem.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from .errors import UsageError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file next to ``path``; on success rename it to ``path``.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.bin"
    >>> with atomic_output(target) as stream:
    ...     _ = stream.write(b"weights")
    >>> target.read_bytes()
    b'weights'
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=".cmpstore-", suffix=".part", dir=folder)
    except OSError as exc:
        raise UsageError(f"cannot write here ({exc.strerror})", path=path) from None
    try:
        with os.fdopen(descriptor, "wb") as stream:
            yield stream
        os.chmod(temporary, 0o644 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def refuse_overwriting_input(output, source) -> None:
    """Raise UsageError if ``output`` is the file ``source`` (whatever the paths say)."""
    if source and os.path.exists(output) and os.path.exists(source) and os.path.samefile(output, source):
        raise UsageError("refusing to overwrite the input file", path=os.fspath(output))


def write_chunks(path: str | os.PathLike, chunks) -> None:
    """Atomically write a sequence of bytes-like chunks (bytes or numpy arrays)."""
    try:
        with atomic_output(path) as stream:
            for chunk in chunks:
                stream.write(chunk)
    except OSError as exc:
        raise UsageError(f"cannot write ({exc.strerror})", path=os.fspath(path)) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

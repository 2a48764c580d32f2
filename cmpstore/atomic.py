"""Output files: written beside the target, put in place whole, never over an input, never over a file by surprise.

Every writer of cmpstore goes through :func:`atomic_output`:

* the data goes to a hidden temporary file in the target's folder
  (``.cmpstore-*.part``), so a failure, an interrupt or a killed process leaves
  the old file or none, never a partial one;
* an existing output is replaced only with ``force``; without it the check
  holds at the moment the file is put in place (a hard link, which fails if
  the name exists; where the filesystem has no hard links, an exclusive
  create of the name), so a file that appears during a long write is kept;
* a file the command reads (``inputs``) is never the output, with or without
  ``force``, whatever path names it;
* only regular files are written: a directory, a device or a FIFO at the
  output path is refused, never replaced by a file;
* an error while writing (a full disk, a file-size limit) becomes one
  :class:`~cmpstore.errors.UsageError` naming the output.

There is no fsync before the file is put in place (as with zstd or xz): it
would double the time to write a large model, and guarding against power
loss is left to the filesystem.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .errors import UsageError, option

TEMPORARY_PREFIX = ".cmpstore-"
TEMPORARY_SUFFIX = ".part"


@dataclass(frozen=True)
class Placement:
    """The rules an output is put in place by: may it replace a file, and which files are inputs."""

    force: bool = False
    inputs: tuple[str, ...] = ()

    @classmethod
    def of(cls, force: bool = False, inputs: Iterable[str | os.PathLike | None] = ()) -> Placement:
        return cls(force, tuple(os.fspath(path) for path in inputs if path is not None))


#: The default: a new file, which replaces nothing.
NEW_FILE = Placement()


def check_output(path: str | os.PathLike, placement: Placement, *, placing: bool = False) -> None:
    """Refuse an output that could not be put in place (see the module docstring).

    Called before any work, and again when the file is put in place (``placing``).
    """
    path = os.fspath(path)
    for source in placement.inputs:
        if _same_file(path, source):
            raise UsageError("refusing to overwrite an input of this command", path=path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            problem = "is a symbolic link to a file that does not exist; name the output itself"
            raise UsageError(problem, path=path) from None
        return
    except OSError as exc:
        raise UsageError(f"cannot write here ({exc.strerror})", path=path) from None
    if stat.S_ISDIR(mode):
        raise UsageError("is a directory; name an output file", path=path)
    if not stat.S_ISREG(mode):
        raise UsageError("is not a regular file (a device, FIFO or socket); cmpstore writes regular files", path=path)
    if not placement.force:
        if placing:
            raise UsageError(
                f"output appeared while it was being written; use {option('force', 'force=True')} to overwrite it",
                path=path,
            )
        raise UsageError(f"output exists; use {option('force', 'force=True')} to overwrite it", path=path)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, placement: Placement = NEW_FILE) -> Iterator[BinaryIO]:
    """Open a temporary file next to ``path``; when the block ends without error, put it in place.

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
    check_output(path, placement)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        descriptor, temporary = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=TEMPORARY_SUFFIX, dir=folder)
    except OSError as exc:
        raise UsageError(f"cannot write here ({exc.strerror})", path=path) from None
    try:
        try:
            with os.fdopen(descriptor, "wb") as stream:
                yield stream
            os.chmod(temporary, _mode_for(path))
            _put_in_place(temporary, path, placement)
        except OSError as exc:
            raise UsageError(f"cannot write ({_reason(exc)})", path=path) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_chunks(path: str | os.PathLike, chunks, placement: Placement = NEW_FILE) -> None:
    """Atomically write a sequence of bytes-like chunks (bytes or numpy arrays)."""
    with atomic_output(path, placement) as stream:
        for chunk in chunks:
            stream.write(chunk)


def _put_in_place(temporary: str, path: str, placement: Placement) -> None:
    check_output(path, placement, placing=True)  # again: the output may have appeared, or become an input
    if placement.force:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)  # fails if the name exists: the check and the placing are one step
    except FileExistsError:
        raise UsageError(
            f"output appeared while it was being written; use {option('force', 'force=True')} to overwrite it",
            path=path,
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        # No hard links here (FAT, some network filesystems): claim the name, then rename over the claim.
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            raise UsageError(
                f"output appeared while it was being written; use {option('force', 'force=True')} to overwrite it",
                path=path,
            ) from None
        os.replace(temporary, path)
        return
    os.unlink(temporary)


def _same_file(path: str, other: str) -> bool:
    try:
        return os.path.samefile(path, other)
    except OSError:
        return False


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EFBIG:
        return "the file would exceed the file-size limit"
    return exc.strerror or str(exc)


def _mode_for(path: str) -> int:
    """The permissions of a file replaced (kept, as ``cp`` keeps them), else those of a new file."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (os.umask sets it, for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

"""The one exception family that cmpstore raises for bad input.

Every failure caused by a file or an argument becomes a :class:`CmpstoreError`
whose message names the file, the layer or section where it applies, and the
problem.  The command line prints that message on one line and exits with
status 2.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping

#: How messages name parameters: empty for the API, which names its own; the command line sets its flags.
_option_names: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "cmpstore_option_names", default=None
)


def option(name: str, api_form: str | None = None) -> str:
    """How a message names the parameter ``name``: ``api_form`` (default ``name``), or the flag it has on the
    command line when the command line is running (see :func:`option_names`).

    >>> option("force", "force=True")
    'force=True'
    >>> with option_names({"force": "--force"}):
    ...     option("force", "force=True")
    '--force'
    """
    return (_option_names.get() or {}).get(name, api_form or name)


@contextlib.contextmanager
def option_names(names: Mapping[str, str]) -> Iterator[None]:
    """Within this block, messages name each parameter in ``names`` as mapped (the command line's flags)."""
    token = _option_names.set(names)
    try:
        yield
    finally:
        _option_names.reset(token)


class CmpstoreError(Exception):
    """Base class of every error cmpstore raises on bad input.

    Parameters
    ----------
    problem : str
        What is wrong, in words a user can act on.
    path : str, optional
        The file concerned.
    where : str, optional
        The layer, blob or section concerned, e.g. ``"layer 'conv1' blob 0"``.
    """

    def __init__(self, problem: str, *, path: str | None = None, where: str | None = None):
        self.problem = problem
        self.path = path
        self.where = where
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [str(self.path)] if self.path else []
        if self.where:
            parts.append(self.where)
        parts.append(self.problem)
        return ": ".join(parts)

    def located(self, *, path: str | None = None, where: str | None = None) -> CmpstoreError:
        """Return a copy of this error with a file and/or place filled in where missing."""
        return type(self)(
            self.problem,
            path=self.path or path,
            where=self.where or where,
        )


class ModelError(CmpstoreError):
    """A Caffe model file (binary, HDF5 or prototxt) is missing, malformed or unsupported."""


class FormatError(CmpstoreError):
    """An encoded cmpstore file is truncated, corrupted or of an unknown version."""


class UsageError(CmpstoreError):
    """An option or argument is invalid."""


@contextlib.contextmanager
def reading(path: str | None, error: type[CmpstoreError] = FormatError) -> Iterator[None]:
    """Make every failure while reading ``path`` a :class:`CmpstoreError` naming it.

    Input is untrusted, so no other exception type may reach the caller.  An
    exception that is not already a CmpstoreError means a check is missing in
    cmpstore: it becomes ``error`` with the words "internal error" so that it
    still reads as one line, and the fuzz tests fail on those words.
    """
    try:
        yield
    except CmpstoreError as exc:
        raise exc.located(path=path) from None
    except MemoryError:
        raise error("not enough memory to read this file", path=path) from None
    except Exception as exc:  # noqa: BLE001 - untrusted input: nothing else may escape
        raise error(
            f"internal error while reading ({type(exc).__name__}: {exc}); please report it", path=path
        ) from None

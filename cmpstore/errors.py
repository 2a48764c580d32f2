"""The one exception family that cmpstore raises for bad input.

Every failure caused by a file or an argument becomes a :class:`CmpstoreError`
whose message names the file, the layer or section where it applies, and the
problem.  The command line prints that message on one line and exits with
status 2.
"""

from __future__ import annotations


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

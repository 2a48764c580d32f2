"""The bounds of every compression setting, checked in one place for the API, the CLI and schedules.

A setting maps a layer selector (a layer name, or ``conv``/``fc``; see
:mod:`cmpstore.compression.selectors`) to a value.  Values outside these
bounds raise :class:`~cmpstore.errors.UsageError` naming the option, the
selector and the bound, before any work starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral, Real

from ..errors import UsageError

# The most clusters a layer may be shared among is what a .cmps codebook holds (the Cmp layers for
# Caffe accept the same), and the relative-index widths are those a .cmps file can store.
from ..limits import MAX_CODEBOOK_ENTRIES, MAX_INDEX_BITS, MIN_INDEX_BITS


def checked_ratio(ratio: object, where: str) -> float:
    """A ``sparse_ratio``: a number in [0, 1).  ``where`` names the setting in the message."""
    if isinstance(ratio, bool) or not isinstance(ratio, Real) or not 0.0 <= float(ratio) < 1.0:
        raise UsageError(f"{where}: a sparse ratio must be in [0, 1), got {ratio}")
    return float(ratio)


def checked_clusters(clusters: object, where: str) -> int:
    """A ``class_num``: a whole number in 1..MAX_CODEBOOK_ENTRIES."""
    if isinstance(clusters, bool) or not isinstance(clusters, Integral) or not 1 <= clusters <= MAX_CODEBOOK_ENTRIES:
        raise UsageError(f"{where}: the number of clusters must be in 1..{MAX_CODEBOOK_ENTRIES}, got {clusters}")
    return int(clusters)


def checked_index_bits(bits: object, where: str) -> int:
    """A relative-index width: a whole number in MIN_INDEX_BITS..MAX_INDEX_BITS."""
    if isinstance(bits, bool) or not isinstance(bits, Integral) or not MIN_INDEX_BITS <= bits <= MAX_INDEX_BITS:
        raise UsageError(f"{where}: index bits must be in {MIN_INDEX_BITS}..{MAX_INDEX_BITS}, got {bits}")
    return int(bits)


def checked_seed(seed: object, where: str) -> int:
    """A random seed: a whole number >= 0, as numpy's generators require."""
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise UsageError(f"{where}: a seed must be a whole number, 0 or more (numpy's generators need it), got {seed}")
    return int(seed)


def checked(settings: Mapping[str, object] | None, check, option: str) -> dict:
    """Every value of ``settings`` (selector -> value) through ``check`` (one of the above); a copy."""
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise UsageError(f"{option}: expected a mapping of layer names or conv/fc to values")
    return {str(selector): check(value, f"{option} {selector}") for selector, value in settings.items()}

"""Per-layer settings such as ``conv1=0.33,fc=5``: exact layer names or the shorthands ``conv`` and ``fc``.

An exact name wins over a shorthand.  ``conv`` means Convolution,
Deconvolution and CmpConvolution layers; ``fc`` means InnerProduct and
CmpInnerProduct layers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from ..caffe.netproto import LayerInfo
from ..errors import UsageError

SHORTHANDS = ("conv", "fc")
Value = TypeVar("Value")


def parse(text: str, convert: Callable[[str], Value], option: str) -> dict[str, Value]:
    """Parse ``name=value,...`` into a dict; raise UsageError naming ``option`` on bad input.

    Examples
    --------
    >>> parse("conv=8, fc=5", int, "--index-bits")
    {'conv': 8, 'fc': 5}
    """
    values: dict[str, Value] = {}
    given: dict[str, str] = {}
    for item in text.split(","):
        name, sep, raw = (part.strip() for part in item.partition("="))
        if not sep or not name or not raw:
            raise UsageError(f"{option}: expected NAME=VALUE pairs such as conv=8,fc=5, got {item.strip()!r}")
        if name in given:  # the last one would silently win
            raise UsageError(f"{option}: {name} is given twice ({name}={given[name]} and {name}={raw})")
        given[name] = raw
        try:
            values[name] = convert(raw)
        except ValueError:
            raise UsageError(f"{option}: {name}={raw} is not a valid value") from None
    return values


def check_names(settings: Mapping[str, object], layers: list[LayerInfo], option: str) -> None:
    """Every key must be a shorthand or the name of a convolution or inner-product layer of the net.

    Settings apply only to those layers' weights, so a name of any other
    layer (a Pooling layer, a BatchNorm) would be silently ignored.
    """
    by_name = {layer.name: layer for layer in layers}
    for key in settings:
        if key in SHORTHANDS:
            continue
        layer = by_name.get(key)
        if layer is None:
            raise UsageError(f"{option} names layer '{key}', which the net does not have")
        if not layer.kind:
            raise UsageError(
                f"{option} names layer '{key}', a {layer.type or 'typeless'} layer: {option} applies only to the "
                "weights of convolution and inner-product layers"
            )


def setting_for(settings: Mapping[str, Value], layer: LayerInfo) -> Value | None:
    """The value that applies to ``layer``: by exact name, else by its shorthand, else None."""
    if layer.name in settings:
        return settings[layer.name]
    return settings.get(layer.kind) if layer.kind else None

"""The Deep Compression schedule: which layers to prune and share, in which stages.

A schedule names, per layer, its ``sparse_ratio`` and ``class_num`` (the
fields of the fork's Cmp layers), then a list of stages, each a finetuning
run of some iterations.  A pruning stage prunes the layers it lists on top of
those pruned before it; a quantization stage weight-shares the layers it
lists, keeping every pruning mask.  As JSON::

    {
      "layers": {"conv1": {"sparse_ratio": 0.33, "class_num": 256}, ...},
      "stages": [{"prune": ["conv1"], "iterations": 500}, ...,
                 {"quantize": ["conv1", "conv2"], "iterations": 500}],
      "solver": {"base_lr": 0.001, "lr_policy": "inv", ...}
    }

Iterative pruning (Han et al., "Learning both weights and connections"):
a pruning stage may instead map layers to the ratio to prune them to,
``{"prune": {"fc1": 0.9}, "iterations": 4000}``, and a later stage may
prune the same layer again to a higher ratio; the magnitudes are ranked
anew each time, and what was pruned stays pruned.  A layer's
``sparse_ratio`` is its ratio where a stage names none.

``solver`` is optional; its fields override the solver prototxt's.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field

from ..compression.settings import checked_clusters, checked_ratio
from ..errors import UsageError, option

SOLVER_FIELDS = frozenset(
    {"base_lr", "momentum", "weight_decay", "lr_policy", "gamma", "power", "stepsize", "display", "type", "random_seed"}
)
#: What each solver override must be: SolverParameter's field types, with their ranges.
_SOLVER_KINDS = {
    "base_lr": "number", "momentum": "number", "weight_decay": "number", "gamma": "number", "power": "number",
    "lr_policy": "text", "type": "text", "stepsize": "int32", "display": "int32", "random_seed": "int64",
}  # fmt: skip
#: Caffe counts iterations in an int32.
MAX_ITERATIONS = 2**31 - 1


@dataclass(frozen=True)
class LayerSetting:
    sparse_ratio: float
    class_num: int | None


@dataclass(frozen=True)
class Stage:
    """One finetuning run: ``kind`` is ``"prune"`` or ``"quantize"``.

    ``ratios`` holds the ratios a pruning stage names itself (iterative
    pruning), as ``(layer, ratio)`` pairs; the other layers it prunes take
    their ``sparse_ratio``.
    """

    kind: str
    layers: tuple[str, ...]
    iterations: int
    ratios: tuple[tuple[str, float], ...] = ()

    @property
    def name(self) -> str:
        if self.kind != "prune":
            return "quantize"
        named = dict(self.ratios)
        return "prune-" + "+".join(f"{n}-{named[n]:g}" if n in named else n for n in self.layers)

    def to_json(self) -> dict:
        layers: list[str] | dict[str, float] = list(self.layers)
        if self.ratios:
            layers = dict(self.ratios)
        return {self.kind: layers, "iterations": self.iterations}


@dataclass(frozen=True)
class Schedule:
    layers: dict[str, LayerSetting]
    stages: tuple[Stage, ...]
    solver: dict[str, object] = field(default_factory=dict)

    def pruned_after(self, stage_index: int) -> dict[str, float]:
        """The ratio every layer is pruned to once stage ``stage_index`` has run (the latest, if pruned again)."""
        ratios: dict[str, float] = {}
        for stage in self.stages[: stage_index + 1]:
            if stage.kind == "prune":
                named = dict(stage.ratios)
                ratios.update({name: named.get(name, self.layers[name].sparse_ratio) for name in stage.layers})
        return ratios

    def quantized_after(self, stage_index: int) -> dict[str, int]:
        """``class_num`` of every layer weight-shared once stage ``stage_index`` has run."""
        names = [n for stage in self.stages[: stage_index + 1] if stage.kind == "quantize" for n in stage.layers]
        return {name: self.layers[name].class_num for name in names}

    def constraints_after(self, stage_index: int) -> dict[str, tuple[float | None, int | None]]:
        """``(sparse_ratio, class_num)`` of every layer pruned or weight-shared by then; None where not."""
        ratios, clusters = self.pruned_after(stage_index), self.quantized_after(stage_index)
        return {name: (ratios.get(name), clusters.get(name)) for name in {**ratios, **clusters}}

    def with_iterations(self, iterations: list[int]) -> Schedule:
        """The same schedule with each stage's iteration count replaced."""
        if len(iterations) != len(self.stages):
            raise UsageError(f"{option('iterations')} gives {len(iterations)} counts for {len(self.stages)} stages")
        for index, count in enumerate(iterations):
            checked_iterations(count, f"{option('iterations')} count {index + 1}")
        stages = tuple(Stage(s.kind, s.layers, n, s.ratios) for s, n in zip(self.stages, iterations, strict=True))
        return _validated(Schedule(self.layers, stages, self.solver))

    def fingerprint(self) -> str:
        """A digest of the schedule, so a resumed run can tell it is the same one."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        return {
            "layers": {
                name: {"sparse_ratio": s.sparse_ratio, "class_num": s.class_num} for name, s in self.layers.items()
            },
            "stages": [stage.to_json() for stage in self.stages],
            "solver": self.solver,
        }


def load_schedule(path: str | os.PathLike) -> Schedule:
    """Read a schedule from a JSON file, with every field checked."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as stream:
            document = json.load(stream)
    except FileNotFoundError:
        raise UsageError("no such schedule file", path=path) from None
    except RecursionError:
        raise UsageError("not a schedule: its JSON is nested too deeply", path=path) from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"not a JSON schedule ({exc})", path=path) from None
    try:
        return schedule_from_json(document)
    except UsageError as exc:
        raise exc.located(path=path) from None


def schedule_from_json(document: object) -> Schedule:
    """Build a schedule from its parsed JSON form (see the module docstring)."""
    if not isinstance(document, dict):
        raise UsageError("a schedule is a JSON object with 'layers' and 'stages'")
    unknown = set(document) - {"layers", "stages", "solver", "description"}
    if unknown:
        raise UsageError(f"unknown schedule keys: {', '.join(sorted(unknown))}")
    layers_json = document.get("layers")
    if not isinstance(layers_json, dict) or not layers_json:
        raise UsageError("'layers' must map layer names to {sparse_ratio, class_num}")
    layers = {name: _layer_setting(name, value) for name, value in layers_json.items()}
    stages_json = document.get("stages")
    if not isinstance(stages_json, list) or not stages_json:
        raise UsageError("'stages' must be a non-empty list")
    stages = tuple(_stage(index, value) for index, value in enumerate(stages_json))
    solver = document.get("solver", {})
    if not isinstance(solver, dict) or set(solver) - SOLVER_FIELDS:
        raise UsageError(f"'solver' may set only: {', '.join(sorted(SOLVER_FIELDS))}")
    for name, value in solver.items():
        _check_solver_value(name, value)
    return _validated(Schedule(layers, stages, dict(solver)))


def _check_solver_value(name: str, value: object) -> None:
    kind = _SOLVER_KINDS[name]
    where = f"'solver' {name}"
    if kind == "text":
        if not isinstance(value, str):
            raise UsageError(f"{where} must be a string, got {value!r:.40}")
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (kind != "number" and isinstance(value, float))
    ):
        expected = "a number" if kind == "number" else "a whole number"
        raise UsageError(f"{where} must be {expected}, got {value!r:.40}")
    if kind == "number" and not math.isfinite(value):
        raise UsageError(f"{where} must be finite, got {value!r}")
    bits = {"int32": 31, "int64": 63}.get(kind)
    if bits and not -(2**bits) <= value < 2**bits:
        raise UsageError(f"{where} must fit Caffe's {kind}, got {value}")


def checked_iterations(value: object, where: str) -> int:
    """A stage's iteration count: a whole number from 0 to Caffe's int32 limit."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ITERATIONS:
        raise UsageError(f"{where}: iterations must be a whole number from 0 to {MAX_ITERATIONS:,}, got {value!r:.40}")
    return value


def layer_wise_schedule(settings: dict[str, LayerSetting], iterations: list[int]) -> Schedule:
    """One pruning stage per layer in the given order, then one quantization stage of them all.

    This is the fork's LeNet recipe; ``iterations`` has one count per stage.
    """
    names = list(settings)
    if len(iterations) != len(names) + 1:
        raise UsageError(
            f"{option('iterations')} needs {len(names) + 1} counts: one per pruned layer, then quantization"
        )
    for index, count in enumerate(iterations):
        checked_iterations(count, f"{option('iterations')} count {index + 1}")
    stages = [Stage("prune", (name,), n) for name, n in zip(names, iterations, strict=False)]
    quantized = tuple(name for name in names if settings[name].class_num)
    stages.append(Stage("quantize", quantized, iterations[-1]))
    return _validated(Schedule(dict(settings), tuple(stages)))


def parse_layer_flag(text: str) -> tuple[str, LayerSetting]:
    """``NAME:SPARSE_RATIO:CLASS_NUM`` (class_num may be empty or 0 for prune-only)."""
    parts = text.split(":")
    if len(parts) != 3:
        raise UsageError(f"{option('layer')} {text!r}: expected NAME:SPARSE_RATIO:CLASS_NUM, e.g. fc1:0.9:32")
    name, ratio, clusters = parts
    try:
        setting = LayerSetting(float(ratio), int(clusters) if clusters not in ("", "0") else None)
    except ValueError:
        raise UsageError(f"{option('layer')} {text!r}: ratio must be a number and class_num an integer") from None
    return name, _checked_setting(name, setting)


def _layer_setting(name, value) -> LayerSetting:
    if not isinstance(value, dict) or set(value) - {"sparse_ratio", "class_num"}:
        raise UsageError(f'layer {name!r}: expected {{"sparse_ratio": R, "class_num": K}}')
    ratio = value.get("sparse_ratio", 0.0)
    clusters = value.get("class_num")
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool):
        raise UsageError(f"layer {name!r}: sparse_ratio must be a number")
    if clusters is not None and (not isinstance(clusters, int) or isinstance(clusters, bool)):
        raise UsageError(f"layer {name!r}: class_num must be an integer")
    return _checked_setting(name, LayerSetting(float(ratio), clusters))


def _checked_setting(name: str, setting: LayerSetting) -> LayerSetting:
    where = f"layer {name!r}"
    checked_ratio(setting.sparse_ratio, where)
    if setting.class_num is not None:
        checked_clusters(setting.class_num, where)
    return setting


def _stage(index: int, value) -> Stage:
    where = f"stage {index + 1}"
    if not isinstance(value, dict):
        raise UsageError(f"{where}: expected an object")
    kinds = [kind for kind in ("prune", "quantize") if kind in value]
    if len(kinds) != 1 or set(value) - {kinds[0], "iterations"}:
        raise UsageError(f'{where}: expected {{"prune": [...]}} or {{"quantize": [...]}}, and "iterations"')
    layers = value[kinds[0]]
    iterations = value.get("iterations")
    ratios: tuple[tuple[str, float], ...] = ()
    if kinds[0] == "prune" and isinstance(layers, dict) and layers:
        for name, ratio in layers.items():
            if not isinstance(ratio, (int, float)) or isinstance(ratio, bool):
                raise UsageError(f"{where}: the ratio for {name!r} must be a number")
            _checked_setting(name, LayerSetting(float(ratio), None))
        ratios = tuple((name, float(ratio)) for name, ratio in layers.items())
        layers = list(layers)
    if not isinstance(layers, list) or not layers or not all(isinstance(n, str) for n in layers):
        detail = " (or, for prune, an object of layer names and ratios)" if kinds[0] == "prune" else ""
        raise UsageError(f"{where}: '{kinds[0]}' must be a non-empty list of layer names{detail}")
    return Stage(kinds[0], tuple(layers), checked_iterations(iterations, where), ratios)


def _validated(schedule: Schedule) -> Schedule:
    pruned: dict[str, float] = {}
    quantized: set[str] = set()
    for index, stage in enumerate(schedule.stages):
        where = f"stage {index + 1} ({stage.name})"
        named = dict(stage.ratios)
        for name in stage.layers:
            if name not in schedule.layers:
                raise UsageError(f"{where}: layer {name!r} has no entry in 'layers'")
            if stage.kind == "prune":
                ratio = named.get(name, schedule.layers[name].sparse_ratio)
                if name in pruned and ratio <= pruned[name]:
                    raise UsageError(
                        f"{where}: layer {name!r} is already pruned to {pruned[name]:g} by an earlier stage; "
                        "pruning it again needs a higher ratio"
                    )
                if name in quantized:
                    raise UsageError(f"{where}: layer {name!r} is pruned after it was quantized")
                pruned[name] = ratio
            else:
                if schedule.layers[name].class_num is None:
                    raise UsageError(f"{where}: layer {name!r} has no class_num to quantize with")
                if name in quantized:
                    raise UsageError(f"{where}: layer {name!r} is already quantized by an earlier stage")
                quantized.add(name)
    return schedule

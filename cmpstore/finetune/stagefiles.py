"""The net and solver prototxts of each finetuning stage.

The driver never changes the user's files: it writes, per stage, a copy of
the train/val net, whose pruned and quantized layers are (for the ``cmp``
backend) the fork's CmpConvolution/CmpInnerProduct with ``sparse_ratio``,
``class_num`` and ``quantize_term`` set, and a copy of the solver that trains
that net for the stage's iterations.  The net keeps its own data layers,
unless the data come from numpy (``--data``): then they are Input layers the
driver fills.  The solver keeps the net's TEST phase (``test_iter``) for the
driver's evaluations, which it runs itself at the solver's ``test_interval``,
and snapshots where the driver says, so that a stage can resume.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..caffe import netproto
from ..errors import UsageError, option
from .datalayers import PARAMS, batch_size, phases

#: Layer types that read data from a database or file; with --data the driver replaces them by Input layers.
DATA_TYPES = frozenset(PARAMS)
STOCK_TO_CMP = {stock: cmp for cmp, stock in netproto.CMP_TO_STOCK.items()}


@dataclass(frozen=True)
class Feed:
    """Where one phase's data goes in: Input tops, batch size, and the transform to apply."""

    data_top: str
    label_top: str
    batch_size: int
    scale: float
    mean: float


@dataclass(frozen=True)
class FedNet:
    """A train/val net, and (for numpy data) how to feed each phase's Input layers.

    With the net's own data layers ``feeds`` and ``score_tops`` are empty:
    Caffe reads the data, and the net's Accuracy layers score it.
    """

    net: netproto.NetParameter
    feeds: dict[str, Feed]  # "train" / "test"
    score_tops: dict[str, str]  # phase -> the blob whose argmax is the prediction

    @property
    def own_data(self) -> bool:
        return not self.feeds


def with_own_data_layers(net: netproto.NetParameter) -> FedNet:
    """The net as it is: Caffe runs its data layers."""
    return FedNet(net, {}, {})


@dataclass(frozen=True)
class Score:
    """An Accuracy layer of the TEST phase: its output blob and its ``top_k``."""

    top: str
    top_k: int
    name: str = ""  # how logs name it; default "<top> (top-<k>)"

    @property
    def label(self) -> str:
        return self.name or f"{self.top} (top-{self.top_k})"


def accuracy_scores(net: netproto.NetParameter) -> list[Score]:
    """Every Accuracy layer of the TEST phase, in the net's order: what each evaluation reports."""
    return [
        Score(layer.top[0], layer.accuracy_param.top_k)
        for layer in net.layer
        if layer.type == "Accuracy" and layer.top and "test" in phases(layer)
    ]


def with_input_layers(net: netproto.NetParameter, sample_shape: tuple[int, ...], path: str) -> FedNet:
    """Replace each phase's data layer by an Input layer of the same tops and batch size.

    ``sample_shape`` is one input's C x H x W.  The data layer's
    ``transform_param`` may scale and subtract one mean value; cropping,
    mirroring and mean files are refused, since the driver applies the
    transform itself.
    """
    fed = netproto.NetParameter()
    fed.CopyFrom(net)
    feeds: dict[str, Feed] = {}
    for layer in fed.layer:
        if layer.type not in DATA_TYPES:
            continue
        where = f"layer '{layer.name}'"
        if len(layer.top) != 2:
            raise UsageError(
                f"numpy data ({option('data')}) feed two tops (data, label), but this data layer has "
                f"{len(layer.top)}; without {option('data')} the driver runs the net's own data layers",
                path=path,
                where=where,
            )
        feed = Feed(layer.top[0], layer.top[1], batch_size(layer, path), *_transform(layer, path, where))
        for phase in phases(layer):
            if phase in feeds:
                raise UsageError(f"a second data layer for the {phase} phase", path=path, where=where)
            feeds[phase] = feed
        include, exclude = list(layer.include), list(layer.exclude)
        name, tops = layer.name, list(layer.top)
        layer.Clear()
        layer.name, layer.type = name, "Input"
        layer.top.extend(tops)
        layer.include.extend(include)
        layer.exclude.extend(exclude)
        layer.input_param.shape.add().dim.extend([feed.batch_size, *sample_shape])
        layer.input_param.shape.add().dim.extend([feed.batch_size])
    for phase in ("train", "test"):
        if phase not in feeds:
            raise UsageError(f"no data layer for the {phase} phase (Data, ImageData, HDF5Data, ...)", path=path)
    return FedNet(fed, feeds, {phase: _score_top(fed, phase, feeds[phase], path) for phase in feeds})


def with_cmp_layers(
    net: netproto.NetParameter, ratios: dict[str, float], clusters: dict[str, int]
) -> netproto.NetParameter:
    """The net with the fork's Cmp layers wherever a layer is pruned or quantized.

    A layer in ``ratios`` gets ``sparse_ratio``; a layer in ``clusters`` gets
    ``quantize_term: true`` and ``class_num``.  Other layers stay stock.
    """
    rewritten = netproto.NetParameter()
    rewritten.CopyFrom(net)
    for layer in rewritten.layer:
        if layer.name not in ratios and layer.name not in clusters:
            continue
        cmp_type = STOCK_TO_CMP.get(layer.type, layer.type)
        if cmp_type not in netproto.CMP_TO_STOCK:
            raise UsageError(
                f"layer '{layer.name}' is a {layer.type}; only Convolution and InnerProduct have Cmp variants"
            )
        layer.type = cmp_type
        params = layer.convolution_param if cmp_type == "CmpConvolution" else layer.inner_product_param
        params.sparse_ratio = ratios.get(layer.name, 0.0)
        if layer.name in clusters:
            params.quantize_term = True
            params.class_num = clusters[layer.name]
    return rewritten


def stage_solver(
    base: netproto.SolverParameter,
    net_path: str,
    iterations: int,
    overrides: dict[str, object],
    gpu: bool,
    *,
    own_data: bool = False,
    snapshot_prefix: str = "",
) -> netproto.SolverParameter:
    """A copy of ``base`` that trains ``net_path`` for ``iterations``, with ``overrides`` applied.

    With the net's own data (``own_data``) the solver keeps one test net, the
    net's TEST phase with ``base``'s first ``test_iter``, for the driver to
    run at ``test_interval``; Caffe itself neither tests (the driver reports
    every Accuracy layer) nor snapshots (the driver snapshots to
    ``snapshot_prefix`` when it chooses, and when it is stopped).
    """
    solver = netproto.SolverParameter()
    solver.CopyFrom(base)
    test_iter = list(base.test_iter[:1])
    kept_states = base if own_data else netproto.SolverParameter()
    for name in (
        "net",
        "net_param",
        "train_net",
        "train_net_param",
        "test_net",
        "test_net_param",
        "test_iter",
        "test_interval",
        "test_initialization",
        "snapshot",
        "snapshot_prefix",
        "test_state",
        "train_state",
    ):
        solver.ClearField(name)
    for name, value in overrides.items():
        setattr(solver, name, value)
    solver.net = net_path
    solver.max_iter = iterations
    solver.snapshot_after_train = False
    solver.solver_mode = netproto.SolverParameter.GPU if gpu else netproto.SolverParameter.CPU
    if own_data:
        solver.test_iter.extend(test_iter)
        # Caffe requires a test_interval with a test net; one it never reaches leaves testing to the driver.
        solver.test_interval = 2**31 - 1
        solver.test_initialization = False
        if kept_states.HasField("train_state"):
            solver.train_state.CopyFrom(kept_states.train_state)
        if kept_states.test_state:
            solver.test_state.add().CopyFrom(kept_states.test_state[0])
    if snapshot_prefix:
        solver.snapshot_prefix = snapshot_prefix
        solver.snapshot_format = netproto.SolverParameter.BINARYPROTO
    return solver


def _transform(layer, path, where) -> tuple[float, float]:
    transform = layer.transform_param
    unsupported = [name for name in ("crop_size", "mirror", "mean_file") if transform.HasField(name)]
    if unsupported or len(transform.mean_value) > 1:
        raise UsageError(
            f"transform_param {', '.join(unsupported) or 'mean_value per channel'} is not supported; "
            f"only scale and one mean_value with {option('data')}; without it the driver runs the net's own data "
            "layers, "
            "and Caffe applies the whole transform_param",
            path=path,
            where=where,
        )
    mean = transform.mean_value[0] if transform.mean_value else 0.0
    return transform.scale, mean


def _score_top(net, phase: str, feed: Feed, path: str) -> str:
    """The blob an Accuracy (else a softmax loss) layer of ``phase`` compares with the label."""
    candidates = []
    for layer in net.layer:
        if phase in phases(layer) and len(layer.bottom) >= 2 and layer.bottom[1] == feed.label_top:
            if layer.type == "Accuracy":
                return layer.bottom[0]
            if layer.type in ("SoftmaxWithLoss", "SigmoidCrossEntropyLoss", "MultinomialLogisticLoss"):
                candidates.append(layer.bottom[0])
    if not candidates:
        raise UsageError(
            f"no Accuracy or loss layer compares a blob with '{feed.label_top}' in the {phase} phase", path=path
        )
    return candidates[0]

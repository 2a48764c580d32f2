"""The net and solver prototxts of each finetuning stage.

The driver never changes the user's files: it writes, per stage, a copy of
the train/val net whose data layers are Input layers that it fills from numpy,
and (for the ``cmp`` backend) whose pruned and quantized layers are the fork's
CmpConvolution/CmpInnerProduct with ``sparse_ratio``, ``class_num`` and
``quantize_term`` set; and a copy of the solver that trains that net for the
stage's iterations, with Caffe's own snapshots and tests turned off, because
the driver snapshots and evaluates each stage itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..caffe import netproto
from ..errors import UsageError

#: Layer types that read data from a database or file; the driver replaces them by Input layers.
DATA_TYPES = frozenset({"Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "Input", "DummyData"})
STOCK_TO_CMP = {stock: cmp for cmp, stock in netproto.CMP_TO_STOCK.items()}
_PHASES = {netproto.Phase.Value("TRAIN"): "train", netproto.Phase.Value("TEST"): "test"}


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
    """A train/val net whose data layers are Input layers, and how to feed each phase."""

    net: netproto.NetParameter
    feeds: dict[str, Feed]  # "train" / "test"
    score_tops: dict[str, str]  # phase -> the blob whose argmax is the prediction


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
                f"a data layer must have two tops (data, label), has {len(layer.top)}", path=path, where=where
            )
        phases = _phases(layer) or ["train", "test"]
        feed = Feed(layer.top[0], layer.top[1], _batch_size(layer, path, where), *_transform(layer, path, where))
        for phase in phases:
            if phase in feeds:
                raise UsageError(f"a second data layer for the {phase} phase", path=path, where=where)
            feeds[phase] = feed
        include = list(layer.include)
        name, tops = layer.name, list(layer.top)
        layer.Clear()
        layer.name, layer.type = name, "Input"
        layer.top.extend(tops)
        layer.include.extend(include)
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
    base: netproto.SolverParameter, net_path: str, iterations: int, overrides: dict[str, object], gpu: bool
) -> netproto.SolverParameter:
    """A copy of ``base`` that trains ``net_path`` for ``iterations``, with ``overrides`` applied."""
    solver = netproto.SolverParameter()
    solver.CopyFrom(base)
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
    return solver


def _phases(layer) -> list[str]:
    phases = []
    for rule in layer.include:
        if rule.HasField("phase"):
            phases.append(_PHASES[rule.phase])
    return phases


def _batch_size(layer, path, where) -> int:
    for params in (layer.data_param, layer.image_data_param, layer.hdf5_data_param, layer.memory_data_param):
        if params.batch_size:
            return params.batch_size
    if layer.type == "Input" and layer.input_param.shape and layer.input_param.shape[0].dim:
        return layer.input_param.shape[0].dim[0]
    raise UsageError("cannot tell the batch size of this data layer", path=path, where=where)


def _transform(layer, path, where) -> tuple[float, float]:
    transform = layer.transform_param
    unsupported = [name for name in ("crop_size", "mirror", "mean_file") if transform.HasField(name)]
    if unsupported or len(transform.mean_value) > 1:
        raise UsageError(
            f"transform_param {', '.join(unsupported) or 'mean_value per channel'} is not supported; "
            "only scale and one mean_value",
            path=path,
            where=where,
        )
    mean = transform.mean_value[0] if transform.mean_value else 0.0
    return transform.scale, mean


def _score_top(net, phase: str, feed: Feed, path: str) -> str:
    """The blob an Accuracy (else a softmax loss) layer of ``phase`` compares with the label."""
    candidates = []
    for layer in net.layer:
        layer_phases = _phases(layer) or ["train", "test"]
        if phase in layer_phases and len(layer.bottom) >= 2 and layer.bottom[1] == feed.label_top:
            if layer.type == "Accuracy":
                return layer.bottom[0]
            if layer.type in ("SoftmaxWithLoss", "SigmoidCrossEntropyLoss", "MultinomialLogisticLoss"):
                candidates.append(layer.bottom[0])
    if not candidates:
        raise UsageError(
            f"no Accuracy or loss layer compares a blob with '{feed.label_top}' in the {phase} phase", path=path
        )
    return candidates[0]

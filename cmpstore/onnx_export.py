"""Caffe deploy nets as ONNX graphs that compute what Caffe computes.

:func:`to_onnx` turns a net definition (a deploy prototxt, parsed) and its
weights (:func:`cmpstore.load_weights`) into an ONNX model of operator set
:data:`OPSET_VERSION`, built with ``onnx.helper``; no Caffe is needed.
Every blob shape is worked out here, as Caffe's layers do when they
reshape, so the graph has static shapes, those of the net's inputs (the
prototxt's, or ``input_shapes``), and the quirks of Caffe's layers are kept:

* Pooling rounds its output size up (``ceil_mode``, the default) and drops a
  last window that would start in the padding; AVE pooling divides by the
  window clipped to the padded input, neither by the kernel size nor by the
  number of values it sums.  Both are rebuilt with explicit padding, so no
  runtime's own ``ceil_mode`` or ``count_include_pad`` rule is relied on.
* BatchNorm divides its mean and variance blobs by the third blob (0 if
  that is 0) and adds ``eps`` (default 1e-5) to the variance, not to the
  scale factor.
* PriorBox (SSD) becomes a constant computed as Caffe's ``PriorBoxLayer``
  does for the net's input size, sizes truncated to integers as it does.

DetectionOutput (SSD) is not exported: the graph stops before it, its
inputs become the graph's outputs, and a warning, the model's
``doc_string`` and its ``metadata_props`` say so.  Every other layer type
that is not listed in :data:`LAYER_TYPES` is refused (UsageError naming the
layer and its type); none is dropped.  Dropout and Split are identities at
inference and become ``Identity`` nodes.  The DeepCompression fork's
CmpConvolution and CmpInnerProduct are exported as Convolution and
InnerProduct with the weights as stored (pruned and shared already, as
the fork saves them).  Blobs in float16 or float64 become float32
initializers.  Legacy V1 nets (``layers``) are refused: upgrade them first.

With ``compact``, a weight-shared blob (at most 256 distinct values, as
:func:`cmpstore.quantize` leaves them) is stored as its codebook (float32)
and a uint8 index tensor of the blob's shape, and the graph computes the
blob with ``Cast`` and ``Gather``: the same bits, a quarter of the bytes.
ONNX Runtime folds those nodes into a constant when it loads the model.
OpenCV's ONNX importer (4.x) wants convolution and Gemm weights as
initializers, so it does not load such a graph.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .errors import ModelError, UsageError

if TYPE_CHECKING:
    import onnx

    from .caffe.netproto import NetParameter

#: The ONNX operator set of every exported graph (Softmax per axis needs at least 13).
OPSET_VERSION = 17
#: The ONNX IR version written into every exported model (IR 8 goes with opset 17).
IR_VERSION = 8
#: Layer types that end an export: the graph stops before them and exports their inputs instead.
STOP_TYPES = frozenset({"DetectionOutput"})
#: With ``compact``: blobs of at most this many distinct values become a codebook and uint8 indices...
MAX_SHARED_VALUES = 256
#: ... when they have at least this many values (below that the two extra nodes cost more than they save).
MIN_SHARED_BLOB = 1024
#: Caffe's phase for deploy nets; layers whose include/exclude rules say otherwise are left out, as Caffe does.
_TEST_PHASE = 1

Shape = tuple[int, ...]


def to_onnx(
    net: NetParameter,
    weights: Mapping[str, Sequence[np.ndarray]],
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    compact: bool = False,
) -> onnx.ModelProto:
    """An ONNX model computing what Caffe computes with ``net`` and ``weights``, in the TEST phase.

    Parameters
    ----------
    net : NetParameter
        A deploy net, e.g. from :func:`cmpstore.caffe.netproto.read_prototxt`.
    weights : mapping
        The blobs by layer name (:func:`cmpstore.load_weights`); float16,
        float32 and float64 blobs alike.
    input_shapes : mapping, optional
        Shapes of the net's inputs by blob name, over those the net declares
        (``Input`` layers, ``input_shape`` or ``input_dim``).
    compact : bool
        Store each weight-shared blob as a codebook and uint8 indices,
        gathered in the graph (see the module's description).

    Returns
    -------
    onnx.ModelProto
        Opset :data:`OPSET_VERSION`, IR version :data:`IR_VERSION`, static
        shapes; its outputs are the net's outputs, named after Caffe's blobs.

    Examples
    --------
    Caffe rounds pooled sizes up: a 3x3 window with stride 2 fits twice into 4 columns.

    >>> import pathlib, tempfile
    >>> from cmpstore.caffe.netproto import read_prototxt
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "net.prototxt"
    >>> _ = path.write_text('input: "data" input_dim: 1 input_dim: 3 input_dim: 4 input_dim: 4 '
    ...                     'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" '
    ...                     'pooling_param { pool: AVE kernel_size: 3 stride: 2 } }')
    >>> model = to_onnx(read_prototxt(path), {})
    >>> [(value.name, [d.dim_value for d in value.type.tensor_type.shape.dim]) for value in model.graph.output]
    [('pool', [1, 3, 2, 2])]
    """
    onnx = _import_onnx()
    exporter = _Exporter(onnx, weights, compact)
    return exporter.run(net, input_shapes or {})


def onnx_bytes(
    net: NetParameter,
    weights: Mapping[str, Sequence[np.ndarray]],
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    compact: bool = False,
) -> bytes:
    """:func:`to_onnx`, serialized: the bytes of an ``.onnx`` file."""
    return to_onnx(net, weights, input_shapes=input_shapes, compact=compact).SerializeToString()


def _import_onnx():
    try:
        import onnx
        import onnx.helper  # noqa: F401 - the submodules used below
        import onnx.numpy_helper  # noqa: F401
    except ImportError:
        raise UsageError("exporting to ONNX needs the onnx package: pip install 'cmpstore[onnx]'") from None
    return onnx


class _Layer:
    """One layer being exported: its parameters, input tensors and shapes, blobs and output names."""

    def __init__(self, param, inputs: list[str], shapes: list[Shape], blobs: Sequence[np.ndarray], outputs: list[str]):
        self.param = param
        self.name = param.name
        self.type = param.type
        self.where = f"layer '{param.name}'" if param.name else "a layer without a name"
        self.inputs = inputs
        self.shapes = shapes
        self.blobs = list(blobs)
        self.outputs = outputs

    def model_error(self, problem: str) -> ModelError:
        return ModelError(problem, where=self.where)

    def usage_error(self, problem: str) -> UsageError:
        return UsageError(f"{self.type} {problem}", where=self.where)

    def check_inputs(self, low: int, high: int | None = None, outputs: int | None = 1) -> None:
        high = low if high is None else high
        if not low <= len(self.inputs) <= high:
            wanted = str(low) if low == high else f"{low} to {high}"
            raise self.model_error(
                f"a {self.type} layer takes {wanted} inputs (bottoms), this one has {len(self.inputs)}"
            )
        if outputs is not None and len(self.outputs) != outputs:
            raise self.model_error(f"a {self.type} layer has {outputs} output (top), this one has {len(self.outputs)}")

    def blob(self, index: int, shape: Shape) -> np.ndarray:
        """Blob ``index`` in ``shape``, its values as stored (float16, float32 or float64).

        As Caffe's loader, a blob of as many dimensions must have exactly that
        shape; one of another number of dimensions (a legacy 4-D shape such as
        ``(1, 1, 10, 500)``) only as many values.
        """
        if index >= len(self.blobs):
            have = f"{len(self.blobs)} blob{'s' if len(self.blobs) != 1 else ''}" if self.blobs else "no blobs"
            raise self.model_error(f"the weights hold {have} for this {self.type} layer; it needs blob {index}")
        values = np.asarray(self.blobs[index])
        if values.dtype.kind != "f":
            raise self.model_error(f"blob {index} holds {values.dtype} values, not floats")
        if values.size != math.prod(shape) or (values.ndim == len(shape) and values.shape != tuple(shape)):
            raise self.model_error(f"blob {index} has the shape {list(values.shape)}, the layer needs {list(shape)}")
        return values.reshape(shape)

    def axis(self, axis: int, ndim: int, what: str = "axis") -> int:
        """Caffe's CanonicalAxisIndex: ``axis`` into ``ndim`` dimensions, negative ones from the end."""
        if not -ndim <= axis < ndim:
            raise self.model_error(f"{what} {axis} is out of range for an input of {ndim} dimensions")
        return axis % ndim


class _Exporter:
    def __init__(self, onnx, weights: Mapping[str, Sequence[np.ndarray]], compact: bool = False):
        self.onnx = onnx
        self.compact = compact
        self.helper = onnx.helper
        self.weights = weights
        self.nodes: list = []
        self.initializers: list = []
        self.shapes: dict[str, Shape] = {}
        self.current: dict[str, str] = {}  # Caffe blob name -> the tensor holding its latest value
        self.consumed: set[str] = set()
        self.produced: list[str] = []  # layer outputs, in order
        self.used_names: set[str] = set()
        self.reserved: set[str] = set()

    # --- the graph ----------------------------------------------------------------------------------------------

    def run(self, net, input_shapes: Mapping[str, Sequence[int]]):
        if len(net.layers):
            raise UsageError(
                "the net uses the legacy V1 'layers' field; upgrade it with Caffe's upgrade_net_proto_text first"
            )
        layers = [layer for layer in net.layer if _included(layer, net.state)]
        inputs = self._declared_inputs(net, layers)
        unknown = sorted(set(input_shapes) - set(inputs))
        if unknown:
            raise UsageError(
                f"input_shapes names {unknown}, which the net has no input called; its inputs: {list(inputs)}"
            )
        graph_inputs = []
        for name, declared in inputs.items():
            shape = tuple(input_shapes.get(name, declared or ()))
            if not shape:
                raise UsageError(f"the net's input '{name}' has no shape; give it in input_shapes")
            if not all(isinstance(dim, (int, np.integer)) and dim > 0 for dim in shape):
                raise UsageError(
                    f"input '{name}' has the shape {list(shape)}; every dimension must be a positive integer"
                )
            shape = tuple(int(dim) for dim in shape)
            self.used_names.add(name)
            self.current[name] = name
            self.shapes[name] = shape
            graph_inputs.append(self.helper.make_tensor_value_info(name, self.onnx.TensorProto.FLOAT, list(shape)))

        exported, stopped = self._split_at_stop(layers)
        writes: dict[str, int] = {}
        for layer in exported:
            if layer.type != "Input":
                for top in layer.top:
                    writes[top] = writes.get(top, 0) + 1
        # A blob's last value gets the blob's own name (what users and other tools ask for).
        self.reserved = {name for name in writes if name not in self.current}
        self.used_names |= self.reserved
        for layer in exported:
            if layer.type != "Input":
                self._export_layer(layer, writes)

        # The inputs of the layers left out first, in their order, then what no exported layer consumes.
        outputs = [self.current[bottom] for layer in stopped for bottom in layer.bottom if bottom in self.current]
        outputs += [name for name in self.produced if name not in self.consumed]
        outputs = list(dict.fromkeys(outputs))
        if not outputs:
            raise ModelError("the net computes nothing: no layer produces an output")
        graph = self.helper.make_graph(
            self.nodes,
            net.name or "caffe_net",
            graph_inputs,
            [self.helper.make_tensor_value_info(n, self.onnx.TensorProto.FLOAT, list(self.shapes[n])) for n in outputs],
            initializer=self.initializers,
        )
        model = self.helper.make_model(
            graph,
            opset_imports=[self.helper.make_opsetid("", OPSET_VERSION)],
            producer_name="cmpstore",
            ir_version=IR_VERSION,
        )
        if stopped:
            left_out = ", ".join(f"'{layer.name}' ({layer.type})" for layer in stopped)
            notice = (
                f"the ONNX graph stops before {left_out}: its outputs are {', '.join(repr(name) for name in outputs)}, "
                "from which to compute those layers"
            )
            model.doc_string = notice
            self.helper.set_model_props(model, {"cmpstore.not_exported": left_out})
            warnings.warn(notice, stacklevel=3)
        return model

    def _declared_inputs(self, net, layers) -> dict[str, Shape | None]:
        """The net's inputs and the shapes it declares, from the legacy fields and its Input layers."""
        inputs: dict[str, Shape | None] = {}
        if len(net.input_shape) not in (0, len(net.input)):
            raise ModelError(f"the net has {len(net.input)} inputs but {len(net.input_shape)} input_shape entries")
        if len(net.input_dim) not in (0, 4 * len(net.input)):
            raise ModelError(
                f"the net has {len(net.input)} inputs but {len(net.input_dim)} input_dim values, not 4 each"
            )
        for index, name in enumerate(net.input):
            if net.input_shape:
                inputs[name] = tuple(net.input_shape[index].dim)
            elif net.input_dim:
                inputs[name] = tuple(net.input_dim[4 * index : 4 * index + 4])
            else:
                inputs[name] = None
        for layer in layers:
            if layer.type != "Input":
                continue
            shapes = [tuple(shape.dim) for shape in layer.input_param.shape]
            if len(shapes) not in (0, 1, len(layer.top)):
                raise ModelError(
                    f"an Input layer gives one shape or one per top; this one has {len(shapes)} for "
                    f"{len(layer.top)} tops",
                    where=f"layer '{layer.name}'",
                )
            for index, top in enumerate(layer.top):
                inputs[top] = shapes[0] if len(shapes) == 1 else shapes[index] if shapes else None
        return inputs

    @staticmethod
    def _split_at_stop(layers):
        """The layers to export, and those left out: STOP_TYPES and every layer that needs one of their outputs."""
        exported, stopped, unavailable = [], [], set()
        for layer in layers:
            if layer.type in STOP_TYPES or unavailable.intersection(layer.bottom):
                stopped.append(layer)
                unavailable.update(layer.top)
            else:
                exported.append(layer)
                unavailable.difference_update(layer.top)
        return exported, stopped

    def _export_layer(self, param, writes: dict[str, int]) -> None:
        where = f"layer '{param.name}'"
        handler = _HANDLERS.get(param.type)
        if handler is None:
            raise UsageError(
                f"layer type '{param.type}' cannot be exported to ONNX (supported: {', '.join(sorted(LAYER_TYPES))})",
                where=where,
            )
        inputs = []
        for bottom in param.bottom:
            if bottom not in self.current:
                raise ModelError(f"its input (bottom) '{bottom}' is not produced by any layer before it", where=where)
            inputs.append(self.current[bottom])
        outputs = []
        for top in param.top:
            writes[top] -= 1
            outputs.append(top if writes[top] == 0 and top in self.reserved else self.fresh(f"{top}/{param.name}"))
        layer = _Layer(param, inputs, [self.shapes[name] for name in inputs], self.weights.get(param.name, ()), outputs)
        shapes = handler(self, layer)
        for name, shape in zip(outputs, shapes, strict=True):
            if any(dim <= 0 for dim in shape):
                raise ModelError(f"its output would have the shape {list(shape)}, with an empty dimension", where=where)
            self.shapes[name] = tuple(int(dim) for dim in shape)
        self.consumed.update(inputs)
        for top, name in zip(param.top, outputs, strict=True):
            self.current[top] = name
            self.produced.append(name)

    # --- building blocks ------------------------------------------------------------------------------------------

    def fresh(self, hint: str) -> str:
        name, suffix = hint, 1
        while name in self.used_names:
            suffix += 1
            name = f"{hint}_{suffix}"
        self.used_names.add(name)
        return name

    def node(self, layer: _Layer, op: str, inputs: Sequence[str], output: str | None = None, **attributes) -> str:
        """Add an ``op`` node for ``layer``; return its output tensor (a fresh name unless ``output`` is given)."""
        output = output or self.fresh(f"{layer.name}/{op}")
        self.nodes.append(
            self.helper.make_node(op, list(inputs), [output], name=self.fresh(f"{layer.name}:{op}"), **attributes)
        )
        return output

    def floats(self, layer: _Layer, hint: str, values) -> str:
        """A float32 initializer (float16 and float64 values are converted) named after ``layer``.

        With ``compact``, a weight-shared one is instead gathered from its codebook (:meth:`shared`).
        """
        array = np.ascontiguousarray(values, dtype=np.float32)
        if self.compact and array.size >= MIN_SHARED_BLOB:
            # Distinct bit patterns, not values: -0.0 and +0.0 (and any NaN) each keep their bits.
            patterns, indices = np.unique(array.view(np.uint32), return_inverse=True)
            if patterns.size <= MAX_SHARED_VALUES:
                return self.shared(layer, hint, patterns.view(np.float32), indices.reshape(array.shape))
        name = self.fresh(f"{layer.name}/{hint}")
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def shared(self, layer: _Layer, hint: str, codebook: np.ndarray, indices: np.ndarray) -> str:
        """``codebook[indices]`` as a tensor: uint8 indices cast to int32 (Gather takes no uint8), then gathered."""
        tensors = self.onnx.numpy_helper
        codebook_name = self.fresh(f"{layer.name}/{hint}_codebook")
        indices_name = self.fresh(f"{layer.name}/{hint}_indices")
        self.initializers.append(tensors.from_array(codebook, codebook_name))
        self.initializers.append(tensors.from_array(indices.astype(np.uint8), indices_name))
        wide = self.node(layer, "Cast", [indices_name], to=self.onnx.TensorProto.INT32)
        return self.node(layer, "Gather", [codebook_name, wide], self.fresh(f"{layer.name}/{hint}"), axis=0)

    def ints(self, layer: _Layer, hint: str, values: Sequence[int]) -> str:
        name = self.fresh(f"{layer.name}/{hint}")
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name

    def reshape(self, layer: _Layer, tensor: str, shape: Shape, output: str | None = None) -> str:
        return self.node(layer, "Reshape", [tensor, self.ints(layer, "shape", shape)], output)

    def identity(self, layer: _Layer, tensor: str, output: str) -> str:
        return self.node(layer, "Identity", [tensor], output)


def _included(layer, state) -> bool:
    """Caffe's Net::FilterNet for one layer and the TEST phase (with the net's own level and stages)."""
    phase = _TEST_PHASE
    level = state.level
    stages = set(state.stage)

    def meets(rule) -> bool:
        if rule.HasField("phase") and rule.phase != phase:
            return False
        if rule.HasField("min_level") and level < rule.min_level:
            return False
        if rule.HasField("max_level") and level > rule.max_level:
            return False
        return all(stage in stages for stage in rule.stage) and not any(stage in stages for stage in rule.not_stage)

    if len(layer.include):
        return any(meets(rule) for rule in layer.include)
    return not any(meets(rule) for rule in layer.exclude)


# --- geometry ---------------------------------------------------------------------------------------------------


def _spatial(
    layer: _Layer, params, repeated: str, height: str, width: str, default: int | None, ndim: int
) -> list[int]:
    """A per-spatial-axis setting of a ConvolutionParameter: the ``*_h``/``*_w`` pair, else the repeated field."""
    if params.HasField(height) or params.HasField(width):
        if ndim != 2:
            raise layer.model_error(f"{height}/{width} are for 2-D inputs, this one has {ndim} spatial axes")
        if repeated == "kernel_size" and not (params.HasField(height) and params.HasField(width)):
            raise layer.model_error("kernel_h and kernel_w must be given together")
        if len(getattr(params, repeated)):
            raise layer.model_error(f"{repeated} and {height}/{width} cannot both be given")
        return [getattr(params, height), getattr(params, width)]
    values = list(getattr(params, repeated))
    if not values:
        if default is None:
            raise layer.model_error("a convolution needs kernel_size or kernel_h and kernel_w")
        return [default] * ndim
    if len(values) == 1:
        return values * ndim
    if len(values) != ndim:
        raise layer.model_error(f"{repeated} has {len(values)} values for {ndim} spatial axes")
    return values


def _convolution_geometry(layer: _Layer, params, ndim: int) -> dict[str, list[int]]:
    kernel = _spatial(layer, params, "kernel_size", "kernel_h", "kernel_w", None, ndim)
    stride = _spatial(layer, params, "stride", "stride_h", "stride_w", 1, ndim)
    pad = _spatial(layer, params, "pad", "pad_h", "pad_w", 0, ndim)
    dilation = list(params.dilation) or [1]
    dilation = dilation * ndim if len(dilation) == 1 else dilation
    if len(dilation) != ndim:
        raise layer.model_error(f"dilation has {len(dilation)} values for {ndim} spatial axes")
    for name, values in (("kernel size", kernel), ("stride", stride), ("dilation", dilation)):
        if not all(value > 0 for value in values):
            raise layer.model_error(f"{name} {values}: every value must be at least 1")
    return {"kernel_shape": kernel, "strides": stride, "pads": pad + pad, "dilations": dilation}


def _convolution(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(1)
    params = layer.param.convolution_param
    (shape,) = layer.shapes
    if params.axis != 1:
        raise layer.usage_error(f"with axis {params.axis} cannot be exported (only channels on axis 1)")
    if params.width_group != 1 or params.height_group != 1:
        raise layer.usage_error("with width_group/height_group (not in Caffe) cannot be exported")
    if len(shape) < 3:
        raise layer.model_error(f"a convolution needs an input with spatial axes, this one has the shape {list(shape)}")
    ndim = len(shape) - 2
    geometry = _convolution_geometry(layer, params, ndim)
    group, outputs, channels = params.group, params.num_output, shape[1]
    if not group or not outputs or channels % group or outputs % group:
        raise layer.model_error(f"{channels} input and {outputs} output channels do not split into {group} groups")
    deconvolution = layer.type == "Deconvolution"
    kernel = geometry["kernel_shape"]
    weight_shape = (channels, outputs // group, *kernel) if deconvolution else (outputs, channels // group, *kernel)
    weight = layer.blob(0, weight_shape)
    inputs = [layer.inputs[0], exporter.floats(layer, "weight", weight)]
    if params.bias_term:
        inputs.append(exporter.floats(layer, "bias", layer.blob(1, (outputs,))))
    extents = [d * (k - 1) + 1 for d, k in zip(geometry["dilations"], kernel, strict=True)]
    pads, strides = geometry["pads"][:ndim], geometry["strides"]
    if deconvolution:
        spatial = [s * (n - 1) + e - 2 * p for n, s, e, p in zip(shape[2:], strides, extents, pads, strict=True)]
    else:
        spatial = [(n + 2 * p - e) // s + 1 for n, s, e, p in zip(shape[2:], strides, extents, pads, strict=True)]
    op = "ConvTranspose" if deconvolution else "Conv"
    exporter.node(layer, op, inputs, layer.outputs[0], group=group, **geometry)
    return [(shape[0], outputs, *spatial)]


def _inner_product(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(1)
    params = layer.param.inner_product_param
    (shape,) = layer.shapes
    axis = layer.axis(params.axis, len(shape))
    rows, depth, outputs = math.prod(shape[:axis]), math.prod(shape[axis:]), params.num_output
    if not outputs:
        raise layer.model_error("num_output must be at least 1")
    weight = layer.blob(0, (depth, outputs) if params.transpose else (outputs, depth))
    inputs = [layer.inputs[0], exporter.floats(layer, "weight", weight)]
    if params.bias_term:
        inputs.append(exporter.floats(layer, "bias", layer.blob(1, (outputs,))))
    matrix = layer.inputs[0] if shape == (rows, depth) else exporter.reshape(layer, layer.inputs[0], (rows, depth))
    inputs[0] = matrix
    top = (*shape[:axis], outputs)
    if top == (rows, outputs):
        exporter.node(layer, "Gemm", inputs, layer.outputs[0], transB=0 if params.transpose else 1)
    else:
        product = exporter.node(layer, "Gemm", inputs, transB=0 if params.transpose else 1)
        exporter.reshape(layer, product, top, layer.outputs[0])
    return [top]


# Pooling methods of caffe.proto's PoolingParameter.
_MAX, _AVE = 0, 1


def _pooling(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(1)
    if len(layer.outputs) != 1:
        raise layer.usage_error("with a second output (the argmax mask) cannot be exported")
    params = layer.param.pooling_param
    (shape,) = layer.shapes
    if len(shape) != 4:
        raise layer.model_error(f"Pooling needs a 4-D input, this one has the shape {list(shape)}")
    if params.pool not in (_MAX, _AVE):
        raise layer.usage_error("with STOCHASTIC pooling cannot be exported (Caffe has it on GPUs only)")
    given_size = params.HasField("kernel_size")
    given_pair = params.HasField("kernel_h") and params.HasField("kernel_w")
    if params.global_pooling:
        if given_size or given_pair:
            raise layer.model_error("with global_pooling the kernel size cannot be given")
        if params.pad or params.pad_h or params.pad_w or max(params.stride, params.stride_h, params.stride_w) > 1:
            raise layer.model_error("with global_pooling, pad must be 0 and stride 1")
        op = "GlobalMaxPool" if params.pool == _MAX else "GlobalAveragePool"
        exporter.node(layer, op, layer.inputs, layer.outputs[0])
        return [(*shape[:2], 1, 1)]
    if given_size == given_pair:
        raise layer.model_error("give the kernel as kernel_size or as kernel_h and kernel_w, one of the two")
    kernel = [params.kernel_size] * 2 if given_size else [params.kernel_h, params.kernel_w]
    pad = [params.pad_h, params.pad_w] if params.HasField("pad_h") else [params.pad] * 2
    stride = [params.stride_h, params.stride_w] if params.HasField("stride_h") else [params.stride] * 2
    if not all(kernel) or not all(stride):
        raise layer.model_error(f"kernel {kernel} and stride {stride} must be at least 1")
    if any(p >= k for p, k in zip(pad, kernel, strict=True)):
        raise layer.model_error(f"pad {pad} must be smaller than the kernel {kernel}")
    heights = shape[2:]
    pooled = []
    for size, k, s, p in zip(heights, kernel, stride, pad, strict=True):
        span = size + 2 * p - k
        if span < 0:
            raise layer.model_error(
                f"the kernel {kernel} is larger than the padded input {[n + 2 * p for n in heights]}"
            )
        pooled.append((-(-span // s) if params.ceil_mode else span // s) + 1)
    # Caffe drops a last window that would start in the padding (when any padding is given).
    if any(pad):
        pooled = [
            n - 1 if (n - 1) * s >= size + p else n for n, s, size, p in zip(pooled, stride, heights, pad, strict=True)
        ]
    for n, s, size, p in zip(pooled, stride, heights, pad, strict=True):
        if (n - 1) * s - p >= size:
            raise layer.usage_error(
                f"with kernel {kernel} and stride {stride} has a last window entirely outside its input, "
                "which Caffe fills with -FLT_MAX (MAX) or garbage (AVE); this cannot be exported"
            )
    # The windows cover [-pad, (n - 1) * stride + kernel - pad) of each axis: the end padding may differ from pad.
    ends = [(n - 1) * s + k - p - size for n, s, k, p, size in zip(pooled, stride, kernel, pad, heights, strict=True)]
    source = layer.inputs[0]
    if any(end < 0 for end in ends):
        keep = [size + min(end, 0) for size, end in zip(heights, ends, strict=True)]
        starts, limits = exporter.ints(layer, "starts", [0, 0]), exporter.ints(layer, "ends", keep)
        source = exporter.node(layer, "Slice", [source, starts, limits, exporter.ints(layer, "axes", [2, 3])])
        ends = [max(end, 0) for end in ends]
    attributes = {"kernel_shape": kernel, "strides": stride}
    top = (*shape[:2], *pooled)
    if params.pool == _MAX:
        exporter.node(layer, "MaxPool", [source], layer.outputs[0], pads=pad + ends, **attributes)
        return [top]
    # AVE: the mean of each full window over zero padding, then rescaled where Caffe's divisor differs.
    if any(pad) or any(ends):
        pads = exporter.ints(layer, "pads", [0, 0, *pad, 0, 0, *ends])
        source = exporter.node(layer, "Pad", [source, pads], mode="constant")
    divisors = []
    for n, s, k, p, size in zip(pooled, stride, kernel, pad, heights, strict=True):
        starts = np.arange(n) * s - p
        divisors.append(np.minimum(starts + k, size + p) - starts)
    rescale = (kernel[0] * kernel[1]) / np.outer(divisors[0], divisors[1]).astype(np.float64)
    if np.all(rescale == 1):
        exporter.node(layer, "AveragePool", [source], layer.outputs[0], **attributes)
    else:
        mean = exporter.node(layer, "AveragePool", [source], **attributes)
        exporter.node(layer, "Mul", [mean, exporter.floats(layer, "divisor_rescale", rescale)], layer.outputs[0])
    return [top]


# --- element-wise and per-channel layers ----------------------------------------------------------------------------


def _unary(op: str, **fixed) -> Callable[[_Exporter, _Layer], list[Shape]]:
    def export(exporter: _Exporter, layer: _Layer) -> list[Shape]:
        layer.check_inputs(1)
        exporter.node(layer, op, layer.inputs, layer.outputs[0], **fixed)
        return layer.shapes

    return export


def _relu(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(1)
    slope = layer.param.relu_param.negative_slope
    if slope:
        exporter.node(layer, "LeakyRelu", layer.inputs, layer.outputs[0], alpha=float(slope))
    else:
        exporter.node(layer, "Relu", layer.inputs, layer.outputs[0])
    return layer.shapes


def _per_channel(values: np.ndarray, shape: Shape) -> np.ndarray:
    """Per-channel values shaped to broadcast over an input of ``shape``: ``(C, 1, 1)`` for NCHW, ``(C,)`` for NC."""
    return values.reshape((-1,) + (1,) * (len(shape) - 2))


def _prelu(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(1)
    (shape,) = layer.shapes
    if len(shape) < 2:
        raise layer.model_error(f"PReLU needs an input with channels, this one has the shape {list(shape)}")
    shared = layer.param.prelu_param.channel_shared
    slope = layer.blob(0, (1,)) if shared else _per_channel(layer.blob(0, (shape[1],)), shape)
    exporter.node(layer, "PRelu", [layer.inputs[0], exporter.floats(layer, "slope", slope)], layer.outputs[0])
    return layer.shapes


def _elu(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(1)
    exporter.node(layer, "Elu", layer.inputs, layer.outputs[0], alpha=float(layer.param.elu_param.alpha))
    return layer.shapes


def _softmax(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(1)
    axis = layer.axis(layer.param.softmax_param.axis, len(layer.shapes[0]))
    exporter.node(layer, "Softmax", layer.inputs, layer.outputs[0], axis=axis)
    return layer.shapes


def _batch_norm(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(1)
    params = layer.param.batch_norm_param
    (shape,) = layer.shapes
    if params.use_alpha_beta:
        raise layer.usage_error("with use_alpha_beta (not in Caffe) cannot be exported")
    if len(shape) < 2:
        raise layer.model_error(f"BatchNorm needs an input with channels, this one has the shape {list(shape)}")
    channels, eps = shape[1], float(params.eps)
    if params.HasField("use_global_stats") and not params.use_global_stats:
        # Caffe normalises with the batch's own statistics then, even in the TEST phase.
        axes = [0, *range(2, len(shape))]
        mean = exporter.node(layer, "ReduceMean", layer.inputs, axes=axes, keepdims=1)
        centred = exporter.node(layer, "Sub", [layer.inputs[0], mean])
        squares = exporter.node(layer, "Mul", [centred, centred])
        variance = exporter.node(layer, "ReduceMean", [squares], axes=axes, keepdims=1)
        shifted = exporter.node(layer, "Add", [variance, exporter.floats(layer, "eps", np.float32(eps))])
        deviation = exporter.node(layer, "Sqrt", [shifted])
        exporter.node(layer, "Div", [centred, deviation], layer.outputs[0])
        return layer.shapes
    factor = float(layer.blob(2, (1,))[0])
    # Caffe scales the running sums by 1 / blob 2, or by 0 when blob 2 is 0.
    factor = 0.0 if factor == 0 else 1.0 / factor
    mean = layer.blob(0, (channels,)).astype(np.float64) * factor
    variance = layer.blob(1, (channels,)).astype(np.float64) * factor
    scale = 1.0 / np.sqrt(variance + np.float64(np.float32(eps)))
    scaled = exporter.node(layer, "Mul", [layer.inputs[0], exporter.floats(layer, "scale", _per_channel(scale, shape))])
    shift = exporter.floats(layer, "shift", _per_channel(-mean * scale, shape))
    exporter.node(layer, "Add", [scaled, shift], layer.outputs[0])
    return layer.shapes


def _affine(exporter: _Exporter, layer: _Layer, params, op: str, with_bias: bool) -> list[Shape]:
    """Scale (``Mul``) or Bias (``Add``): by a blob, or by a second input, along ``axis``/``num_axes``."""
    layer.check_inputs(1, 2)
    shape = layer.shapes[0]
    if len(layer.inputs) == 2:
        factor_shape = layer.shapes[1]
    else:
        first = layer.axis(params.axis, len(shape)) if shape else 0
        if params.num_axes < -1 or (params.num_axes != -1 and first + params.num_axes > len(shape)):
            raise layer.model_error(f"num_axes {params.num_axes} does not fit an input of shape {list(shape)}")
        factor_shape = shape[first:] if params.num_axes == -1 else shape[first : first + params.num_axes]
    # Caffe puts a scalar factor at axis 0 whatever the axis says.
    axis = 0 if not factor_shape else layer.axis(params.axis, len(shape))
    if shape[axis : axis + len(factor_shape)] != tuple(factor_shape):
        raise layer.model_error(
            f"a factor of shape {list(factor_shape)} does not fit an input of shape {list(shape)} at axis {axis}"
        )
    broadcast = tuple(factor_shape) + (1,) * (len(shape) - axis - len(factor_shape))
    blob_index = 0
    if len(layer.inputs) == 2:
        factor = layer.inputs[1]
        if broadcast != tuple(factor_shape):
            factor = exporter.reshape(layer, factor, broadcast)
    else:
        values = layer.blob(0, tuple(factor_shape)).reshape(broadcast)
        factor = exporter.floats(layer, "scale" if op == "Mul" else "bias", values)
        blob_index = 1
    if not with_bias:
        exporter.node(layer, op, [layer.inputs[0], factor], layer.outputs[0])
        return [shape]
    scaled = exporter.node(layer, op, [layer.inputs[0], factor])
    bias = exporter.floats(layer, "bias", layer.blob(blob_index, tuple(factor_shape)).reshape(broadcast))
    exporter.node(layer, "Add", [scaled, bias], layer.outputs[0])
    return [shape]


def _scale(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    params = layer.param.scale_param
    return _affine(exporter, layer, params, "Mul", params.bias_term)


def _bias(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    return _affine(exporter, layer, layer.param.bias_param, "Add", False)


# Eltwise operations of caffe.proto's EltwiseParameter.
_PROD, _SUM, _ELTWISE_MAX = 0, 1, 2


def _eltwise(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(2, max(2, len(layer.inputs)))
    params = layer.param.eltwise_param
    shape = layer.shapes[0]
    if any(other != shape for other in layer.shapes[1:]):
        raise layer.model_error(f"Eltwise inputs must have one shape, these have {[list(s) for s in layer.shapes]}")
    coefficients = list(params.coeff)
    if coefficients and (params.operation != _SUM or len(coefficients) != len(layer.inputs)):
        raise layer.model_error("coeff is for SUM only, one per input")
    if params.operation == _SUM:
        terms = [
            name if c == 1 else exporter.node(layer, "Mul", [name, exporter.floats(layer, "coeff", np.float32(c))])
            for name, c in zip(layer.inputs, coefficients or [1.0] * len(layer.inputs), strict=True)
        ]
        exporter.node(layer, "Sum", terms, layer.outputs[0])
    elif params.operation == _PROD:
        product = layer.inputs[0]
        for index, name in enumerate(layer.inputs[1:], start=2):
            product = exporter.node(
                layer, "Mul", [product, name], layer.outputs[0] if index == len(layer.inputs) else None
            )
    else:
        exporter.node(layer, "Max", layer.inputs, layer.outputs[0])
    return [shape]


def _power(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(1)
    params = layer.param.power_param
    steps = []
    if params.scale != 1:
        steps.append(("Mul", "scale", params.scale))
    if params.shift != 0:
        steps.append(("Add", "shift", params.shift))
    if params.power != 1:
        steps.append(("Pow", "power", params.power))
    value = layer.inputs[0]
    if not steps:
        exporter.identity(layer, value, layer.outputs[0])
    for index, (op, hint, constant) in enumerate(steps):
        output = layer.outputs[0] if index == len(steps) - 1 else None
        value = exporter.node(layer, op, [value, exporter.floats(layer, hint, np.float32(constant))], output)
    return layer.shapes


def _exp_or_log(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    """Exp: ``base ^ (shift + scale * x)``; Log: ``log_base(shift + scale * x)``; base -1 means e."""
    layer.check_inputs(1)
    params = layer.param.exp_param if layer.type == "Exp" else layer.param.log_param
    if params.base != -1 and params.base <= 0:
        raise layer.model_error(f"base {params.base} must be positive, or -1 for e")
    natural = 1.0 if params.base == -1 else math.log(params.base)
    value = layer.inputs[0]
    if layer.type == "Exp":
        factor, shift = params.scale * natural, params.shift * natural
        if factor != 1:
            value = exporter.node(layer, "Mul", [value, exporter.floats(layer, "scale", np.float32(factor))])
        if shift != 0:
            value = exporter.node(layer, "Add", [value, exporter.floats(layer, "shift", np.float32(shift))])
        exporter.node(layer, "Exp", [value], layer.outputs[0])
        return layer.shapes
    if params.scale != 1:
        value = exporter.node(layer, "Mul", [value, exporter.floats(layer, "scale", np.float32(params.scale))])
    if params.shift != 0:
        value = exporter.node(layer, "Add", [value, exporter.floats(layer, "shift", np.float32(params.shift))])
    if natural == 1:
        exporter.node(layer, "Log", [value], layer.outputs[0])
    else:
        logarithm = exporter.node(layer, "Log", [value])
        exporter.node(
            layer, "Mul", [logarithm, exporter.floats(layer, "base", np.float32(1 / natural))], layer.outputs[0]
        )
    return layer.shapes


def _threshold(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(1)
    limit = exporter.floats(layer, "threshold", np.float32(layer.param.threshold_param.threshold))
    above = exporter.node(layer, "Greater", [layer.inputs[0], limit])
    exporter.node(layer, "Cast", [above], layer.outputs[0], to=exporter.onnx.TensorProto.FLOAT)
    return layer.shapes


def _clip(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(1)
    params = layer.param.clip_param
    bounds = [
        exporter.floats(layer, hint, np.float32(value)) for hint, value in (("min", params.min), ("max", params.max))
    ]
    exporter.node(layer, "Clip", [layer.inputs[0], *bounds], layer.outputs[0])
    return layer.shapes


def _swish(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(1)
    beta = layer.param.swish_param.beta
    argument = layer.inputs[0]
    if beta != 1:
        argument = exporter.node(layer, "Mul", [argument, exporter.floats(layer, "beta", np.float32(beta))])
    gate = exporter.node(layer, "Sigmoid", [argument])
    exporter.node(layer, "Mul", [layer.inputs[0], gate], layer.outputs[0])
    return layer.shapes


# LRN regions of caffe.proto's LRNParameter.
_ACROSS_CHANNELS = 0


def _lrn(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(1)
    params = layer.param.lrn_param
    (shape,) = layer.shapes
    size = params.local_size
    if size % 2 == 0:
        raise layer.model_error(f"local_size {size} must be odd")
    if len(shape) != 4:
        raise layer.model_error(f"LRN needs a 4-D input, this one has the shape {list(shape)}")
    if params.norm_region == _ACROSS_CHANNELS:
        exporter.node(
            layer,
            "LRN",
            layer.inputs,
            layer.outputs[0],
            size=size,
            alpha=float(params.alpha),
            beta=float(params.beta),
            bias=float(params.k),
        )
        return layer.shapes
    # WITHIN_CHANNEL: x * (1 + alpha * mean of x^2 over a size x size window)^-beta (Caffe ignores k here).
    squares = exporter.node(layer, "Mul", [layer.inputs[0], layer.inputs[0]])
    half = (size - 1) // 2
    padded = exporter.node(layer, "Pad", [squares, exporter.ints(layer, "pads", [0, 0, half, half, 0, 0, half, half])])
    mean = exporter.node(layer, "AveragePool", [padded], kernel_shape=[size, size], strides=[1, 1])
    scaled = exporter.node(layer, "Mul", [mean, exporter.floats(layer, "alpha", np.float32(params.alpha))])
    base = exporter.node(layer, "Add", [scaled, exporter.floats(layer, "one", np.float32(1))])
    factor = exporter.node(layer, "Pow", [base, exporter.floats(layer, "beta", np.float32(-params.beta))])
    exporter.node(layer, "Mul", [layer.inputs[0], factor], layer.outputs[0])
    return layer.shapes


def _normalize(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    """SSD's Normalize: x / sqrt(sum of squares + eps), over each sample or each position, times a scale."""
    layer.check_inputs(1)
    params = layer.param.norm_param
    (shape,) = layer.shapes
    if len(shape) < 2:
        raise layer.model_error(f"Normalize needs an input with channels, this one has the shape {list(shape)}")
    axes = list(range(1, len(shape))) if params.across_spatial else [1]
    squares = exporter.node(layer, "ReduceSumSquare", layer.inputs, axes=axes, keepdims=1)
    shifted = exporter.node(layer, "Add", [squares, exporter.floats(layer, "eps", np.float32(params.eps))])
    norm = exporter.node(layer, "Sqrt", [shifted])
    normalized = exporter.node(layer, "Div", [layer.inputs[0], norm])
    scale = layer.blob(0, (1,)) if params.channel_shared else _per_channel(layer.blob(0, (shape[1],)), shape)
    exporter.node(layer, "Mul", [normalized, exporter.floats(layer, "scale", scale)], layer.outputs[0])
    return layer.shapes


# --- layers that move values ----------------------------------------------------------------------------------------


def _identity(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    """Dropout (identity at inference) and Split (one input, as many outputs)."""
    layer.check_inputs(1, outputs=None if layer.type == "Split" else 1)
    for output in layer.outputs:
        exporter.identity(layer, layer.inputs[0], output)
    return [layer.shapes[0]] * len(layer.outputs)


def _silence(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(1, max(len(layer.inputs), 1), outputs=0)
    return []


def _concat(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(1, max(len(layer.inputs), 1))
    params = layer.param.concat_param
    first = layer.shapes[0]
    if params.HasField("concat_dim") and params.HasField("axis"):
        raise layer.model_error("give concat_dim or axis, not both")
    axis = params.concat_dim if params.HasField("concat_dim") else params.axis
    axis = layer.axis(axis, len(first))
    for shape in layer.shapes[1:]:
        if len(shape) != len(first) or shape[:axis] + shape[axis + 1 :] != first[:axis] + first[axis + 1 :]:
            listed = ", ".join(str(list(s)) for s in layer.shapes)
            raise layer.model_error(f"cannot concatenate inputs of shapes {listed} along axis {axis}")
    exporter.node(layer, "Concat", layer.inputs, layer.outputs[0], axis=axis)
    return [(*first[:axis], sum(shape[axis] for shape in layer.shapes), *first[axis + 1 :])]


def _slice(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(1, outputs=None)
    params = layer.param.slice_param
    (shape,) = layer.shapes
    if params.HasField("slice_dim") and params.HasField("axis"):
        raise layer.model_error("give slice_dim or axis, not both")
    axis = layer.axis(params.slice_dim if params.HasField("slice_dim") else params.axis, len(shape))
    tops, size = len(layer.outputs), shape[axis]
    points = list(params.slice_point)
    if points:
        if len(points) != tops - 1 or any(b <= a for a, b in zip([0, *points], [*points, size], strict=True)):
            raise layer.model_error(f"slice points {points} do not cut an axis of {size} into {tops} parts")
        sizes = [b - a for a, b in zip([0, *points], [*points, size], strict=True)]
    else:
        if not tops or size % tops:
            raise layer.model_error(f"an axis of {size} does not slice into {tops} equal parts")
        sizes = [size // tops] * tops
    exporter.nodes.append(
        exporter.helper.make_node(
            "Split",
            [layer.inputs[0], exporter.ints(layer, "split", sizes)],
            layer.outputs,
            name=exporter.fresh(f"{layer.name}:Split"),
            axis=axis,
        )
    )
    return [(*shape[:axis], part, *shape[axis + 1 :]) for part in sizes]


def _crop(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(2)
    params = layer.param.crop_param
    shape, reference = layer.shapes
    if len(shape) != len(reference):
        raise layer.model_error(f"Crop inputs of shapes {list(shape)} and {list(reference)} differ in dimensions")
    start = layer.axis(params.axis, len(shape))
    offsets = list(params.offset)
    if len(offsets) not in (0, 1, len(shape) - start):
        raise layer.model_error(f"{len(offsets)} offsets for {len(shape) - start} cropped axes")
    axes, starts, ends, top = [], [], [], list(shape)
    for axis in range(start, len(shape)):
        offset = offsets[0] if len(offsets) == 1 else offsets[axis - start] if offsets else 0
        if offset + reference[axis] > shape[axis]:
            raise layer.model_error(f"cannot crop {reference[axis]} at offset {offset} from an axis of {shape[axis]}")
        if (offset, reference[axis]) != (0, shape[axis]):
            axes.append(axis)
            starts.append(offset)
            ends.append(offset + reference[axis])
        top[axis] = reference[axis]
    if not axes:
        exporter.identity(layer, layer.inputs[0], layer.outputs[0])
    else:
        inputs = [layer.inputs[0], *(exporter.ints(layer, hint, v) for hint, v in (("starts", starts), ("ends", ends)))]
        exporter.node(layer, "Slice", [*inputs, exporter.ints(layer, "axes", axes)], layer.outputs[0])
    return [tuple(top)]


def _flatten(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(1)
    params = layer.param.flatten_param
    (shape,) = layer.shapes
    first = layer.axis(params.axis, len(shape))
    last = layer.axis(params.end_axis, len(shape), "end_axis")
    if last < first:
        raise layer.model_error(f"end_axis {params.end_axis} comes before axis {params.axis}")
    top = (*shape[:first], math.prod(shape[first : last + 1]), *shape[last + 1 :])
    exporter.reshape(layer, layer.inputs[0], top, layer.outputs[0])
    return [top]


def _reshape(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    """Caffe's Reshape: dims of 0 copy the input's, one -1 is inferred, over axes [axis, axis + num_axes)."""
    layer.check_inputs(1)
    params = layer.param.reshape_param
    (shape,) = layer.shapes
    start = params.axis if params.axis >= 0 else len(shape) + params.axis + 1
    if not 0 <= start <= len(shape):
        raise layer.model_error(f"axis {params.axis} is out of range for an input of {len(shape)} dimensions")
    if params.num_axes < -1:
        raise layer.model_error(f"num_axes {params.num_axes} must be -1 or more")
    end = len(shape) if params.num_axes == -1 else start + params.num_axes
    if end > len(shape):
        raise layer.model_error(f"axis {params.axis} and num_axes {params.num_axes} go past the input's {len(shape)}")
    dims = list(params.shape.dim)
    if dims.count(-1) > 1 or any(dim < -1 for dim in dims):
        raise layer.model_error(f"shape {dims} may hold one -1 and no other negative dimension")
    new = []
    for index, dim in enumerate(dims):
        if dim == 0:
            if start + index >= len(shape):
                raise layer.model_error(f"shape {dims} copies dimension {start + index}, which the input lacks")
            dim = shape[start + index]
        new.append(dim)
    top = [*shape[:start], *new, *shape[end:]]
    total = math.prod(shape)
    if -1 in new:
        known = math.prod(dim for dim in top if dim != -1)
        if known == 0 or total % known:
            raise layer.model_error(f"shape {dims} does not divide the input of shape {list(shape)}")
        top[top.index(-1)] = total // known
    if math.prod(top) != total:
        raise layer.model_error(f"shape {dims} does not fit the input of shape {list(shape)}")
    exporter.reshape(layer, layer.inputs[0], tuple(top), layer.outputs[0])
    return [tuple(top)]


def _permute(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(1)
    (shape,) = layer.shapes
    order = list(layer.param.permute_param.order)
    if len(set(order)) != len(order) or any(axis >= len(shape) for axis in order):
        raise layer.model_error(f"order {order} is not a permutation of the axes of an input of shape {list(shape)}")
    # Caffe appends the axes the order leaves out, in their own order.
    order += [axis for axis in range(len(shape)) if axis not in order]
    exporter.node(layer, "Transpose", layer.inputs, layer.outputs[0], perm=order)
    return [tuple(shape[axis] for axis in order)]


def _prior_box(exporter: _Exporter, layer: _Layer) -> list[Shape]:
    layer.check_inputs(2)
    feature, image = layer.shapes
    if len(feature) != 4 or len(image) != 4:
        raise layer.model_error(f"PriorBox needs two 4-D inputs, these have the shapes {list(feature)}, {list(image)}")
    boxes = prior_boxes(layer.param.prior_box_param, feature[2:], image[2:], layer.where)
    value = exporter.onnx.numpy_helper.from_array(boxes, exporter.fresh(f"{layer.name}/priors"))
    exporter.node(layer, "Constant", [], layer.outputs[0], value=value)
    return [boxes.shape]


def prior_boxes(params, feature_size: Sequence[int], image_size: Sequence[int], where: str | None = None) -> np.ndarray:
    """The output of SSD Caffe's PriorBoxLayer, shape ``(1, 2, H * W * priors * 4)``, as float32.

    ``feature_size`` and ``image_size`` are the (height, width) of the layer's
    two inputs.  As in Caffe, min and max sizes are truncated to integers,
    box centres are computed in float32, and the aspect-ratio boxes use the
    min size alone.
    """
    min_sizes = list(params.min_size)
    max_sizes = list(params.max_size)
    if not min_sizes or any(size <= 0 for size in min_sizes):
        raise ModelError("PriorBox needs positive min_size values", where=where)
    if max_sizes and (
        len(max_sizes) != len(min_sizes) or any(b <= a for a, b in zip(min_sizes, max_sizes, strict=True))
    ):
        raise ModelError("PriorBox needs one max_size above each min_size, or none", where=where)
    ratios = [1.0]
    for ratio in params.aspect_ratio:
        if not any(abs(ratio - known) < 1e-6 for known in ratios):
            ratios.append(float(np.float32(ratio)))
            if params.flip:
                ratios.append(float(np.float32(1.0 / ratio)))
    variances = list(params.variance) or [0.1]
    if len(variances) not in (1, 4) or any(v <= 0 for v in variances):
        raise ModelError(f"PriorBox needs one or four positive variances, not {variances}", where=where)
    if params.HasField("img_h") or params.HasField("img_w"):
        image_h, image_w = params.img_h, params.img_w
    elif params.HasField("img_size"):
        image_h = image_w = params.img_size
    else:
        image_h, image_w = image_size
    if not image_h or not image_w:
        image_h, image_w = image_size
    height, width = feature_size
    if params.HasField("step_h") or params.HasField("step_w"):
        step_h, step_w = np.float32(params.step_h), np.float32(params.step_w)
    elif params.HasField("step"):
        step_h = step_w = np.float32(params.step)
    else:
        step_h = step_w = np.float32(0)
    if step_h == 0 or step_w == 0:
        step_h, step_w = np.float32(image_h) / np.float32(height), np.float32(image_w) / np.float32(width)
    sizes = []  # (box width, box height) per prior, in Caffe's order
    for index, min_size in enumerate(min_sizes):
        smallest = int(min_size)  # Caffe keeps the sizes in ints here
        sizes.append((np.float32(smallest), np.float32(smallest)))
        if max_sizes:
            side = np.float32(math.sqrt(smallest * int(max_sizes[index])))
            sizes.append((side, side))
        for ratio in ratios:
            if abs(ratio - 1.0) < 1e-6:
                continue
            root = math.sqrt(ratio)
            sizes.append((np.float32(smallest * root), np.float32(smallest / root)))
    offset = np.float32(params.offset)
    centre_x = (np.arange(width, dtype=np.float32) + offset) * step_w
    centre_y = (np.arange(height, dtype=np.float32) + offset) * step_h
    half = np.array(sizes, dtype=np.float64) / 2.0  # (priors, 2)
    cx = centre_x.astype(np.float64)[None, :, None]
    cy = centre_y.astype(np.float64)[:, None, None]
    corners = np.stack(
        np.broadcast_arrays(
            (cx - half[None, None, :, 0]) / image_w,
            (cy - half[None, None, :, 1]) / image_h,
            (cx + half[None, None, :, 0]) / image_w,
            (cy + half[None, None, :, 1]) / image_h,
        ),
        axis=-1,
    ).astype(np.float32)
    if params.clip:
        corners = np.clip(corners, np.float32(0), np.float32(1))
    count = corners.size
    variance = np.resize(np.asarray(variances, dtype=np.float32), count)
    return np.stack([corners.reshape(count), variance]).reshape(1, 2, count)


#: Layer type -> the function that exports it, returning the shapes of its outputs.
_HANDLERS: dict[str, Callable[[_Exporter, _Layer], list[Shape]]] = {
    "AbsVal": _unary("Abs"),
    "BatchNorm": _batch_norm,
    "Bias": _bias,
    "BNLL": _unary("Softplus"),
    "Clip": _clip,
    "CmpConvolution": _convolution,
    "CmpInnerProduct": _inner_product,
    "Concat": _concat,
    "Convolution": _convolution,
    "Crop": _crop,
    "Deconvolution": _convolution,
    "Dropout": _identity,
    "ELU": _elu,
    "Eltwise": _eltwise,
    "Exp": _exp_or_log,
    "Flatten": _flatten,
    "InnerProduct": _inner_product,
    "Log": _exp_or_log,
    "LRN": _lrn,
    "Normalize": _normalize,
    "Permute": _permute,
    "Pooling": _pooling,
    "Power": _power,
    "PReLU": _prelu,
    "PriorBox": _prior_box,
    "ReLU": _relu,
    "Reshape": _reshape,
    "Scale": _scale,
    "Sigmoid": _unary("Sigmoid"),
    "Silence": _silence,
    "Slice": _slice,
    "Softmax": _softmax,
    "Split": _identity,
    "Swish": _swish,
    "TanH": _unary("Tanh"),
    "Threshold": _threshold,
}
#: Every layer type :func:`to_onnx` handles: the exported ones, Input, and STOP_TYPES (where it stops).
LAYER_TYPES = frozenset(_HANDLERS) | {"Input"} | STOP_TYPES

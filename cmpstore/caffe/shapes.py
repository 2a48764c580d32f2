"""Blob shapes of a net's learnable parameters, inferred from its prototxt as Caffe would.

Enough of Caffe's shape inference to size the weights of convolution and
inner-product layers without Caffe: inputs (``Input`` layers or the legacy
``input``/``input_shape``/``input_dim`` fields), Convolution,
Deconvolution, Pooling, InnerProduct, Concat, Flatten and the layers that
keep their input's shape.
"""

from __future__ import annotations

import math

from ..errors import ModelError

#: Layer types whose top has the shape of their (first) bottom.
SHAPE_PRESERVING = frozenset(
    {
        "ReLU",
        "PReLU",
        "ELU",
        "Sigmoid",
        "TanH",
        "AbsVal",
        "Power",
        "Exp",
        "Log",
        "BNLL",
        "Threshold",
        "Dropout",
        "LRN",
        "BatchNorm",
        "Scale",
        "Bias",
        "Softmax",
        "Eltwise",
        "Split",
        "MVN",
        "Clip",
        "Swish",
    }
)


def parameter_shapes(net) -> dict[str, list[tuple[int, ...]]]:
    """Weight and bias shapes of every Convolution, Deconvolution and InnerProduct layer, by name.

    Raises ModelError naming the layer for what Caffe would refuse on the
    way (a layer without its input, a stride of 0, an axis out of range, a
    negative dimension), so that no shape computed here is nonsense.
    """
    blobs: dict[str, tuple[int, ...]] = {}
    shapes: dict[str, list[tuple[int, ...]]] = {}
    _legacy_inputs(net, blobs)
    for layer in net.layer:
        where = f"layer '{layer.name}'"
        bottoms = []
        for name in layer.bottom:
            if name not in blobs:
                raise ModelError(f"input blob '{name}' has no known shape", where=where)
            bottoms.append(blobs[name])
        kind = layer.type
        if kind == "Input":
            tops = [tuple(shape.dim) for shape in layer.input_param.shape]
            if len(tops) == 1:
                tops = tops * len(layer.top)
        elif kind in ("Convolution", "Deconvolution", "CmpConvolution"):
            bottom = _first(bottoms, kind, where)
            top, params = _convolution(layer, bottom, deconvolution=kind == "Deconvolution", where=where)
            tops, shapes[layer.name] = [top], params
        elif kind in ("InnerProduct", "CmpInnerProduct"):
            top, params = _inner_product(layer, _first(bottoms, kind, where), where)
            tops, shapes[layer.name] = [top], params
        elif kind == "Pooling":
            tops = [_pooling(layer, _first(bottoms, kind, where), where)]
        elif kind == "Concat":
            tops = [_concat(layer, bottoms, where)]
        elif kind == "Flatten":
            bottom = _first(bottoms, kind, where)
            _axis(1, bottom, where)
            tops = [(bottom[0], math.prod(bottom[1:]))]
        elif kind in SHAPE_PRESERVING:
            tops = [_first(bottoms, kind, where)] * len(layer.top)
        elif kind in ("SoftmaxWithLoss", "Accuracy", "EuclideanLoss", "Silence"):
            tops = [()] * len(layer.top)
        else:
            raise ModelError(f"cannot infer shapes through a {kind} layer", where=where)
        for name, shape in zip(layer.top, tops, strict=False):
            _check_dims(shape, f"its output '{name}'", where)
            blobs[name] = shape
    return shapes


def _legacy_inputs(net, blobs) -> None:
    if net.input_shape:
        for name, shape in zip(net.input, net.input_shape, strict=False):
            blobs[name] = tuple(shape.dim)
    elif net.input_dim:
        for index, name in enumerate(net.input):
            blobs[name] = tuple(net.input_dim[4 * index : 4 * index + 4])
    for name, shape in blobs.items():
        _check_dims(shape, f"the net's input '{name}'", None)


def _check_dims(shape: tuple[int, ...], what: str, where: str | None) -> None:
    if any(dim < 0 for dim in shape):
        raise ModelError(f"{what} has the shape {list(shape)}, with a negative dimension", where=where)


def _first(bottoms: list, kind: str, where: str) -> tuple[int, ...]:
    if not bottoms:
        raise ModelError(f"a {kind} layer needs an input (bottom), and this one has none", where=where)
    return bottoms[0]


def _axis(axis: int, bottom: tuple[int, ...], where: str) -> int:
    """``axis`` as an index into ``bottom``, negative ones counting from the end, as Caffe's CanonicalAxisIndex."""
    if not -len(bottom) <= axis < len(bottom):
        raise ModelError(f"axis {axis} is out of range for its input of shape {list(bottom)}", where=where)
    return axis % len(bottom)


def _concat(layer, bottoms: list, where: str) -> tuple[int, ...]:
    first = _first(bottoms, "Concat", where)
    axis = _axis(layer.concat_param.axis if layer.concat_param.HasField("axis") else 1, first, where)
    for shape in bottoms[1:]:
        if len(shape) != len(first) or shape[:axis] + shape[axis + 1 :] != first[:axis] + first[axis + 1 :]:
            shapes = ", ".join(str(list(shape)) for shape in bottoms)
            raise ModelError(f"cannot concatenate inputs of shapes {shapes} along axis {axis}", where=where)
    joined = list(first)
    joined[axis] = sum(shape[axis] for shape in bottoms)
    return tuple(joined)


def _pair(params, values, height: str, width: str, default: int) -> tuple[int, int]:
    """A 2-D setting from its ``*_h``/``*_w`` fields when set, else from the (repeated) field."""
    # HasField, not the value: some Caffe versions give stride_h/stride_w a default of 1.
    if params.HasField(height) or params.HasField(width):
        return getattr(params, height), getattr(params, width)
    if len(values) == 0:
        return default, default
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _check_convolution(params, channels: int, where: str) -> None:
    """What Caffe's BaseConvolutionLayer checks (a CHECK failure there aborts Caffe), for a 2-D convolution."""
    if params.kernel_size and (params.HasField("kernel_h") or params.HasField("kernel_w")):
        raise ModelError("kernel_size and kernel_h/kernel_w are both set; Caffe takes one or the other", where=where)
    for name in ("kernel_size", "stride", "pad", "dilation"):
        values = getattr(params, name)
        if len(values) > 2:
            raise ModelError(f"{len(values)} values of {name} for a 2-D convolution: give 1 or 2", where=where)
    if params.num_output < 1:
        raise ModelError(f"num_output {params.num_output}: a convolution needs at least one output", where=where)
    group = params.group
    if group < 1:
        raise ModelError(f"group {group}: a group count must be at least 1", where=where)
    if channels % group:
        raise ModelError(f"group {group} does not divide the {channels} input channels", where=where)
    if params.num_output % group:
        raise ModelError(f"group {group} does not divide num_output {params.num_output}", where=where)


def _convolution(layer, bottom, deconvolution, where):
    params = layer.convolution_param
    if len(bottom) != 4:
        raise ModelError(f"expects a 4-D input, got {list(bottom)}", where=where)
    _check_convolution(params, bottom[1], where)
    kernel = _pair(params, params.kernel_size, "kernel_h", "kernel_w", 0)
    if not all(kernel):
        raise ModelError("convolution without a kernel size", where=where)
    stride = _stride(_pair(params, params.stride, "stride_h", "stride_w", 1), where)
    pad = _pair(params, params.pad, "pad_h", "pad_w", 0)
    dilation = (params.dilation[0],) * 2 if len(params.dilation) == 1 else tuple(params.dilation[:2]) or (1, 1)
    group = params.group
    channels = bottom[1]
    if deconvolution:
        weight = (channels, params.num_output // group, *kernel)
        spatial = [stride[i] * (bottom[2 + i] - 1) + dilation[i] * (kernel[i] - 1) + 1 - 2 * pad[i] for i in range(2)]
    else:
        weight = (params.num_output, channels // group, *kernel)
        spatial = [
            (bottom[2 + i] + 2 * pad[i] - (dilation[i] * (kernel[i] - 1) + 1)) // stride[i] + 1 for i in range(2)
        ]
    shapes = [weight] + ([(params.num_output,)] if params.bias_term else [])
    return (bottom[0], params.num_output, *spatial), shapes


def _inner_product(layer, bottom, where):
    params = layer.inner_product_param
    axis = _axis(params.axis, bottom, where)
    inputs = math.prod(bottom[axis:])
    weight = (inputs, params.num_output) if params.transpose else (params.num_output, inputs)
    shapes = [weight] + ([(params.num_output,)] if params.bias_term else [])
    return (*bottom[:axis], params.num_output), shapes


def _pooling(layer, bottom, where):
    params = layer.pooling_param
    if len(bottom) != 4:
        raise ModelError(f"expects a 4-D input, got {list(bottom)}", where=where)
    if params.global_pooling:
        return (*bottom[:2], 1, 1)
    kernel = _pair(params, [params.kernel_size] if params.kernel_size else [], "kernel_h", "kernel_w", 0)
    stride = _stride(_pair(params, [params.stride], "stride_h", "stride_w", 1), where)
    pad = _pair(params, [params.pad], "pad_h", "pad_w", 0)
    spatial = []
    for i in range(2):
        # Caffe rounds pooled sizes up (unless ceil_mode is false, a field of forks such as the
        # one cmpstore's caffe.proto follows), then drops a last window that starts inside the padding.
        span = bottom[2 + i] + 2 * pad[i] - kernel[i]
        size = (-(-span // stride[i]) if params.ceil_mode else span // stride[i]) + 1
        if pad[i] and (size - 1) * stride[i] >= bottom[2 + i] + pad[i]:
            size -= 1
        spatial.append(size)
    return (*bottom[:2], *spatial)


def _stride(stride: tuple[int, int], where: str) -> tuple[int, int]:
    if not all(stride):
        raise ModelError(f"stride {list(stride)}: a stride must be at least 1", where=where)
    return stride

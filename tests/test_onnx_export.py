"""cmpstore's Caffe -> ONNX converter (cmpstore.onnx_export).

ONNX Runtime runs every exported graph; its outputs are compared with numpy
transcriptions of Caffe's layers (Caffe's own loops for Pooling and
PriorBox), with OpenCV 4's Caffe importer running the same net and weights,
and, on the real-model corpus (tests/real_models.py), with OpenCV on seeded
random inputs: max abs difference <= 1e-4 and relative L2 <= 1e-5.  Every
exported model passes ``onnx.checker.check_model(full_check=True)``.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np
import pytest
import real_models
from common import CAFFE_DIR, SHARED_MODELS
from test_corpus import archives  # noqa: F401 - the corpus fixture: each distribution fetched once and checked

from cmpstore import api, onnx_export
from cmpstore.caffe import netproto
from cmpstore.caffe.model import LAYER_FIELD, BlobAddress, Model, Payload
from cmpstore.errors import ModelError, UsageError
from cmpstore.synthetic import build_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

MAX_ABS = 1e-4
REL_L2 = 1e-5
DATA_FIELD = 5


@pytest.fixture(scope="module")
def cv2():
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Caffe importer (OpenCV 5 removed it): opencv-python-headless<5")
    return cv2


# --- running and comparing ------------------------------------------------------------------------------------------


def differences(actual, expected) -> tuple[float, float]:
    """Max abs difference and relative L2 (||a - e|| / ||e||), in float64."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if not actual.size:
        return 0.0, 0.0
    error = actual - expected
    norm = np.linalg.norm(expected)
    return float(np.abs(error).max()), float(np.linalg.norm(error) / norm) if norm else float(np.linalg.norm(error))


def assert_close(actual, expected, what: str) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    max_abs, rel_l2 = differences(actual, expected)
    assert max_abs <= MAX_ABS and rel_l2 <= REL_L2, f"{what}: max abs {max_abs:.3g}, relative L2 {rel_l2:.3g}"


def read_net(tmp_path, text: str):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return netproto.read_prototxt(path)


def export(net, weights, input_shapes=None):
    model = onnx_export.to_onnx(net, weights, input_shapes=input_shapes)
    onnx.checker.check_model(model, full_check=True)
    return model


def run(model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def write_caffemodel(net, weights: dict[str, list[np.ndarray]], path) -> None:
    """The net with its weights as a binary caffemodel (float32 ``data``), for OpenCV."""
    skeleton = netproto.NetParameter()
    skeleton.CopyFrom(net)
    payloads = []
    for index, layer in enumerate(skeleton.layer):
        for blob_index, values in enumerate(weights.get(layer.name, [])):
            layer.blobs.add().shape.dim.extend(np.shape(values))
            address = BlobAddress(LAYER_FIELD, index, blob_index, DATA_FIELD)
            payloads.append(Payload(address, np.ascontiguousarray(values, dtype="<f4").reshape(-1)))
    api.save_model(Model(netproto.serialize(skeleton), payloads), path, force=True)


def opencv_forward(cv2, prototxt, caffemodel, inputs: dict[str, np.ndarray], blobs: list[str]) -> list[np.ndarray]:
    """OpenCV's values of ``blobs`` (Caffe blob names) for ``inputs``, with the net and weights in those files."""
    reader = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    # Layer by layer, as Caffe computes: no fused BatchNorm/Scale/ReLU, no Winograd convolutions.
    reader.enableFusion(False)
    if hasattr(reader, "enableWinograd"):
        reader.enableWinograd(False)
    for name, value in inputs.items():
        reader.setInput(value, name)
    # OpenCV names outputs by the layer that last wrote them (some layers by their top instead).
    known = set(reader.getLayerNames())
    where = {}
    for layer in netproto.read_prototxt(prototxt).layer:
        for index, top in enumerate(layer.top):
            where[top] = (layer.name if layer.name in known else top, index)
    layers = sorted({where[blob][0] for blob in blobs})
    retrieved = dict(zip(layers, reader.forwardAndRetrieve(layers), strict=True))
    return [np.asarray(retrieved[where[blob][0]][where[blob][1]]) for blob in blobs]


# --- numpy transcriptions of Caffe's layers -----------------------------------------------------------------------


def ref_convolution(x, weight, bias, stride, pad, dilation, group):
    n, channels, height, width = x.shape
    outputs, per_group, kh, kw = weight.shape
    padded = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    out_h = (height + 2 * pad[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    out_w = (width + 2 * pad[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    out = np.zeros((n, outputs, out_h, out_w))
    step = outputs // group
    for g in range(group):
        source = padded[:, g * per_group : (g + 1) * per_group]
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dilation[0], i * dilation[0] + stride[0] * (out_h - 1) + 1, stride[0])
                cols = slice(j * dilation[1], j * dilation[1] + stride[1] * (out_w - 1) + 1, stride[1])
                taps = weight[g * step : (g + 1) * step, :, i, j]
                out[:, g * step : (g + 1) * step] += np.einsum("nchw,oc->nohw", source[:, :, rows, cols], taps)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


def ref_deconvolution(x, weight, bias, stride, pad, dilation, group):
    n, channels, height, width = x.shape
    _, per_group, kh, kw = weight.shape
    extent = [dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1]
    full = np.zeros((n, per_group * group, stride[0] * (height - 1) + extent[0], stride[1] * (width - 1) + extent[1]))
    step = channels // group
    for g in range(group):
        source = x[:, g * step : (g + 1) * step]
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dilation[0], i * dilation[0] + stride[0] * (height - 1) + 1, stride[0])
                cols = slice(j * dilation[1], j * dilation[1] + stride[1] * (width - 1) + 1, stride[1])
                taps = weight[g * step : (g + 1) * step, :, i, j]
                full[:, g * per_group : (g + 1) * per_group, rows, cols] += np.einsum("nchw,co->nohw", source, taps)
    out = full[:, :, pad[0] : full.shape[2] - pad[0], pad[1] : full.shape[3] - pad[1]]
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


def ref_pooling(x, method, kernel, stride, pad, ceil_mode=True):
    """Caffe's PoolingLayer: its output size rule and its Forward_cpu loops."""
    _, _, height, width = x.shape
    sizes = []
    for size, k, s, p in zip((height, width), kernel, stride, pad, strict=True):
        span = (size + 2 * p - k) / s
        sizes.append((math.ceil(span) if ceil_mode else math.floor(span)) + 1)
    if pad[0] or pad[1]:
        sizes = [
            n - 1 if (n - 1) * s >= size + p else n
            for n, s, size, p in zip(sizes, stride, (height, width), pad, strict=True)
        ]
    out = np.empty(x.shape[:2] + tuple(sizes))
    for ph in range(sizes[0]):
        for pw in range(sizes[1]):
            hstart, wstart = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
            if method == "MAX":
                hend, wend = min(hstart + kernel[0], height), min(wstart + kernel[1], width)
                hstart, wstart = max(hstart, 0), max(wstart, 0)
                out[:, :, ph, pw] = x[:, :, hstart:hend, wstart:wend].max(axis=(2, 3))
            else:
                hend, wend = min(hstart + kernel[0], height + pad[0]), min(wstart + kernel[1], width + pad[1])
                pool_size = (hend - hstart) * (wend - wstart)
                hstart, wstart, hend, wend = max(hstart, 0), max(wstart, 0), min(hend, height), min(wend, width)
                out[:, :, ph, pw] = x[:, :, hstart:hend, wstart:wend].sum(axis=(2, 3)) / pool_size
    return out


def ref_prior_box(
    feature_hw,
    image_hw,
    min_sizes,
    max_sizes=(),
    aspect_ratios=(),
    flip=True,
    clip=True,
    variance=(),
    img_hw=None,
    step_hw=None,
    offset=0.5,
):
    """SSD Caffe's PriorBoxLayer::Forward_cpu, loop for loop (its sizes are ints)."""
    ratios = [1.0]
    for ratio in aspect_ratios:
        if all(abs(ratio - known) >= 1e-6 for known in ratios):
            ratios.append(ratio)
            if flip:
                ratios.append(1.0 / ratio)
    image_h, image_w = img_hw or image_hw
    height, width = feature_hw
    step_h, step_w = step_hw or (np.float32(image_h) / height, np.float32(image_w) / width)
    boxes = []
    for h in range(height):
        for w in range(width):
            center_x = np.float32((w + offset) * np.float32(step_w))
            center_y = np.float32((h + offset) * np.float32(step_h))
            for s, min_size in enumerate(min_sizes):
                smallest = int(min_size)
                sides = [(smallest, smallest)]
                if max_sizes:
                    side = math.sqrt(smallest * int(max_sizes[s]))
                    sides.append((side, side))
                for ratio in ratios:
                    if abs(ratio - 1.0) >= 1e-6:
                        sides.append((smallest * math.sqrt(ratio), smallest / math.sqrt(ratio)))
                for box_w, box_h in sides:
                    box_w, box_h = float(np.float32(box_w)), float(np.float32(box_h))
                    boxes += [
                        (float(center_x) - box_w / 2.0) / image_w,
                        (float(center_y) - box_h / 2.0) / image_h,
                        (float(center_x) + box_w / 2.0) / image_w,
                        (float(center_y) + box_h / 2.0) / image_h,
                    ]
    corners = np.asarray(boxes, dtype=np.float32)
    if clip:
        corners = np.clip(corners, 0, 1)
    variances = np.resize(np.asarray(list(variance) or [0.1], dtype=np.float32), corners.size)
    return np.stack([corners, variances])[None]


def ref_softmax(x, axis):
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def per_channel(values, ndim):
    return np.asarray(values, np.float64).reshape((-1,) + (1,) * (ndim - 2))


# --- synthetic nets, one or two layers each -------------------------------------------------------------------------


@dataclass
class Case:
    """A net of one layer type (after its Input layer), its weights and a numpy reference of its outputs."""

    id: str
    layers: str
    inputs: dict[str, tuple[int, ...]]
    weights: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)
    reference: object = None  # (inputs, weights) -> {output blob: array}
    opencv_differs: str = ""  # why OpenCV's Caffe importer cannot be compared here (it lacks or misreads the layer)
    positive: bool = False  # inputs > 0 (Log)
    fill: dict = field(default_factory=dict)  # layer -> explicit blob values

    def prototxt(self) -> str:
        shapes = "".join(f" shape {{ {' '.join(f'dim: {d}' for d in shape)} }}" for shape in self.inputs.values())
        tops = "".join(f' top: "{name}"' for name in self.inputs)
        return (
            f'name: "{self.id}"\nlayer {{ name: "input" type: "Input"{tops} input_param {{{shapes} }} }}\n'
            + self.layers
        )

    def arrays(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        inputs = {}
        for name, shape in self.inputs.items():
            values = rng.standard_normal(shape).astype(np.float32)
            inputs[name] = np.abs(values) + np.float32(0.1) if self.positive else values
        weights = {
            name: [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
            for name, shapes in self.weights.items()
        }
        for name, blobs in self.fill.items():
            weights[name] = [np.asarray(blob, dtype=np.float32) for blob in blobs]
        return inputs, weights


def _conv_case(
    id, param, shape, weight, *, bias=True, stride=(1, 1), pad=(0, 0), dilation=(1, 1), group=1, deconvolution=False
):
    kind = "Deconvolution" if deconvolution else "Convolution"
    function = ref_deconvolution if deconvolution else ref_convolution

    def reference(x, w):
        blobs = w["conv"]
        data = x["data"].astype(np.float64)
        return {"out": function(data, blobs[0], blobs[1] if bias else None, stride, pad, dilation, group)}

    shapes = [weight] + ([(weight[1] * group if deconvolution else weight[0],)] if bias else [])
    layers = f'layer {{ name: "conv" type: "{kind}" bottom: "data" top: "out" convolution_param {{ {param} }} }}\n'
    return Case(id, layers, {"data": shape}, {"conv": shapes}, reference)


CONVOLUTIONS = [
    _conv_case(
        "conv-group-dilation-hw",
        "num_output: 6 group: 2 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 dilation: 2",
        (2, 4, 9, 8),
        (6, 2, 3, 2),
        stride=(2, 1),
        pad=(1, 0),
        dilation=(2, 2),
        group=2,
    ),
    _conv_case(
        "conv-no-bias",
        "num_output: 5 kernel_size: 3 pad: 1 bias_term: false",
        (1, 3, 6, 7),
        (5, 3, 3, 3),
        bias=False,
        pad=(1, 1),
    ),
    _conv_case(
        "conv-stride-pad",
        "num_output: 4 kernel_size: 3 stride: 2 pad: 2",
        (1, 2, 7, 6),
        (4, 2, 3, 3),
        stride=(2, 2),
        pad=(2, 2),
    ),
    _conv_case(
        "deconv-group-pad",
        "num_output: 6 kernel_size: 3 stride: 2 pad: 1 group: 2",
        (1, 4, 5, 6),
        (4, 3, 3, 3),
        stride=(2, 2),
        pad=(1, 1),
        group=2,
        deconvolution=True,
    ),
    _conv_case(
        "deconv-k2s2-no-bias",
        "num_output: 3 kernel_size: 2 stride: 2 bias_term: false",
        (2, 2, 4, 3),
        (2, 3, 2, 2),
        bias=False,
        stride=(2, 2),
        deconvolution=True,
    ),
]


def _ip_case(id, param, shape, weight, axis, transpose):
    differs = "OpenCV ignores transpose" if transpose else ""

    def reference(x, w):
        data = x["data"].astype(np.float64)
        rows = data.reshape(math.prod(shape[:axis]), -1)
        matrix = w["ip"][0].astype(np.float64)
        product = rows @ (matrix if transpose else matrix.T) + w["ip"][1]
        return {"out": product.reshape(*shape[:axis], -1)}

    layers = (
        f'layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "out" inner_product_param {{ {param} }} }}\n'
    )
    outputs = weight[1] if transpose else weight[0]
    return Case(id, layers, {"data": shape}, {"ip": [weight, (outputs,)]}, reference, opencv_differs=differs)


INNER_PRODUCTS = [
    _ip_case("ip-batch-of-3", "num_output: 7", (3, 2, 4, 5), (7, 40), 1, False),
    _ip_case("ip-axis-2-transposed", "num_output: 6 axis: 2 transpose: true", (2, 3, 4, 5), (20, 6), 2, True),
    _ip_case("ip-axis-2", "num_output: 6 axis: 2", (2, 3, 4, 5), (6, 20), 2, False),
    _ip_case("ip-transposed", "num_output: 4 transpose: true", (3, 5), (5, 4), 1, True),
]


def _pool_case(id, param, shape, kernel=None, stride=(1, 1), pad=(0, 0), ceil_mode=True):
    """A Pooling layer; ``kernel`` None for global pooling."""
    layers = f'layer {{ name: "pool" type: "Pooling" bottom: "data" top: "out" pooling_param {{ {param} }} }}\n'
    method = "MAX" if "pool: MAX" in param else "AVE"

    def reference(x, w):
        data = x["data"].astype(np.float64)
        if kernel is None:
            return {"out": (data.max if method == "MAX" else data.mean)(axis=(2, 3), keepdims=True)}
        return {"out": ref_pooling(data, method, kernel, stride, pad, ceil_mode)}

    return Case(id, layers, {"data": shape}, reference=reference)


POOLINGS = [
    # The last window sticks out of the input (ceil rounding): MAX over what is there, AVE divides by what is there.
    _pool_case("max-ceil", "pool: MAX kernel_size: 3 stride: 2", (2, 3, 8, 8), (3, 3), (2, 2)),
    _pool_case("ave-ceil", "pool: AVE kernel_size: 3 stride: 2", (2, 3, 8, 8), (3, 3), (2, 2)),
    # AVE with padding: the divisor counts padding up to pad past the input, not the ceil's extra rows.
    _pool_case("ave-pad-ceil", "pool: AVE kernel_size: 3 stride: 2 pad: 1", (1, 2, 6, 7), (3, 3), (2, 2), (1, 1)),
    # A last window that would start in the padding is dropped.
    _pool_case("max-pad-clipped", "pool: MAX kernel_size: 2 stride: 2 pad: 1", (1, 2, 5, 6), (2, 2), (2, 2), (1, 1)),
    _pool_case("ave-pad-clipped", "pool: AVE kernel_size: 2 stride: 2 pad: 1", (1, 2, 5, 5), (2, 2), (2, 2), (1, 1)),
    _pool_case(
        "ave-rectangular",
        "pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0",
        (1, 3, 7, 5),
        (3, 2),
        (2, 1),
        (1, 0),
    ),
    _pool_case(
        "max-rectangular",
        "pool: MAX kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 1",
        (1, 3, 6, 8),
        (2, 3),
        (1, 2),
        (1, 1),
    ),
    _pool_case(
        "ave-floor",
        "pool: AVE kernel_size: 3 stride: 2 pad: 1 ceil_mode: false",
        (1, 2, 8, 8),
        (3, 3),
        (2, 2),
        (1, 1),
        ceil_mode=False,
    ),
    # Floor rounding that leaves the last rows and columns out.
    _pool_case(
        "max-floor-drops-rows",
        "pool: MAX kernel_size: 3 stride: 2 ceil_mode: false",
        (1, 2, 8, 9),
        (3, 3),
        (2, 2),
        ceil_mode=False,
    ),
    _pool_case(
        "ave-floor-drops-rows",
        "pool: AVE kernel_size: 3 stride: 2 ceil_mode: false",
        (1, 2, 8, 9),
        (3, 3),
        (2, 2),
        ceil_mode=False,
    ),
    _pool_case("ave-7x7-whole", "pool: AVE kernel_size: 7 stride: 1", (2, 4, 7, 7), (7, 7)),
    _pool_case("max-global", "pool: MAX global_pooling: true", (2, 3, 5, 4)),
    _pool_case("ave-global", "pool: AVE global_pooling: true", (2, 3, 5, 4)),
]


def _elementwise(id, type_, param, function, shape=(2, 3, 4, 5), opencv_differs="", positive=False):
    layers = f'layer {{ name: "layer" type: "{type_}" bottom: "data" top: "out" {param} }}\n'
    return Case(
        id,
        layers,
        {"data": shape},
        reference=lambda x, w: {"out": function(x["data"].astype(np.float64))},
        opencv_differs=opencv_differs,
        positive=positive,
    )


ACTIVATIONS = [
    _elementwise("relu", "ReLU", "", lambda x: np.maximum(x, 0)),
    _elementwise("relu-leaky", "ReLU", "relu_param { negative_slope: 0.1 }", lambda x: np.where(x > 0, x, 0.1 * x)),
    _elementwise("sigmoid", "Sigmoid", "", lambda x: 1 / (1 + np.exp(-x))),
    _elementwise("tanh", "TanH", "", np.tanh),
    _elementwise("absval", "AbsVal", "", np.abs),
    _elementwise("bnll", "BNLL", "", lambda x: np.log1p(np.exp(x))),
    _elementwise("elu", "ELU", "elu_param { alpha: 0.5 }", lambda x: np.where(x > 0, x, 0.5 * (np.exp(x) - 1))),
    _elementwise("exp-base-2", "Exp", "exp_param { base: 2 scale: 0.5 shift: 1 }", lambda x: 2 ** (1 + 0.5 * x)),
    _elementwise("exp", "Exp", "", np.exp),
    _elementwise(
        "log-base-10",
        "Log",
        "log_param { base: 10 scale: 2 shift: 0.5 }",
        lambda x: np.log10(0.5 + 2 * x),
        positive=True,
        opencv_differs="OpenCV's Log ignores base, scale and shift",
    ),
    _elementwise("log", "Log", "", np.log, positive=True),
    _elementwise(
        "threshold",
        "Threshold",
        "threshold_param { threshold: 0.2 }",
        lambda x: (x > 0.2).astype(float),
        opencv_differs="OpenCV has no Threshold layer",
    ),
    _elementwise(
        "clip",
        "Clip",
        "clip_param { min: -0.5 max: 0.75 }",
        lambda x: np.clip(x, -0.5, 0.75),
        opencv_differs="OpenCV has no Caffe Clip layer",
    ),
    _elementwise(
        "swish",
        "Swish",
        "swish_param { beta: 1.5 }",
        lambda x: x / (1 + np.exp(-1.5 * x)),
        opencv_differs="OpenCV's Swish ignores beta",
    ),
    _elementwise("swish-beta-1", "Swish", "", lambda x: x / (1 + np.exp(-x))),
    _elementwise("power", "Power", "power_param { power: 2 scale: 0.5 shift: 1 }", lambda x: (1 + 0.5 * x) ** 2),
    _elementwise("power-cube", "Power", "power_param { power: 3 }", lambda x: x**3),
    _elementwise("power-affine", "Power", "power_param { scale: -2 shift: 0.25 }", lambda x: 0.25 - 2 * x),
    _elementwise("softmax", "Softmax", "", lambda x: ref_softmax(x, 1)),
    _elementwise("softmax-axis-3", "Softmax", "softmax_param { axis: 3 }", lambda x: ref_softmax(x, 3)),
    _elementwise("softmax-axis-minus-2", "Softmax", "softmax_param { axis: -2 }", lambda x: ref_softmax(x, 2)),
    _elementwise("dropout", "Dropout", "dropout_param { dropout_ratio: 0.3 }", lambda x: x),
    _elementwise(
        "lrn-across-channels",
        "LRN",
        "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 }",
        lambda x: (
            x
            / (
                1
                + 0.5
                / 3
                * sum(np.pad(x * x, ((0, 0), (1, 1), (0, 0), (0, 0)))[:, i : i + x.shape[1]] for i in range(3))
            )
            ** 0.75
        ),
        shape=(2, 5, 3, 4),
    ),
    _elementwise(
        "lrn-across-channels-k",
        "LRN",
        "lrn_param { local_size: 5 alpha: 0.5 beta: 0.6 k: 2 }",
        lambda x: (
            x
            / (
                2
                + 0.5
                / 5
                * sum(np.pad(x * x, ((0, 0), (2, 2), (0, 0), (0, 0)))[:, i : i + x.shape[1]] for i in range(5))
            )
            ** 0.6
        ),
        shape=(2, 6, 3, 4),
        opencv_differs="OpenCV reads no k (it takes bias 1)",
    ),
    _elementwise(
        "lrn-within-channel",
        "LRN",
        "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL }",
        lambda x: x * (1 + 0.5 * ref_pooling(x * x, "AVE", (3, 3), (1, 1), (1, 1))) ** -0.75,
    ),
]


def _prelu(x, w, shared):
    slope = w["prelu"][0].astype(np.float64)
    slope = slope.reshape(()) if shared else per_channel(slope, x["data"].ndim)
    data = x["data"].astype(np.float64)
    return {"out": np.where(data > 0, data, slope * data)}


def _batch_norm(x, w, eps=1e-5, factor_blob=0.5):
    mean, variance, factor = (blob.astype(np.float64) for blob in w["bn"])
    scale = 0.0 if factor[0] == 0 else 1.0 / factor[0]
    data = x["data"].astype(np.float64)
    ndim = data.ndim
    centred = data - per_channel(mean * scale, ndim)
    return {"out": centred / np.sqrt(per_channel(variance * scale, ndim) + np.float32(eps))}


def _batch_stats(x, w):
    data = x["data"].astype(np.float64)
    centred = data - data.mean(axis=(0, 2, 3), keepdims=True)
    return {"out": centred / np.sqrt((centred**2).mean(axis=(0, 2, 3), keepdims=True) + np.float32(1e-5))}


def _normalize(x, w, across_spatial, channel_shared):
    data = x["data"].astype(np.float64)
    axes = (1, 2, 3) if across_spatial else (1,)
    normalized = data / np.sqrt((data**2).sum(axis=axes, keepdims=True) + np.float32(1e-10))
    scale = w["norm"][0].astype(np.float64)
    return {"out": normalized * (scale.reshape(()) if channel_shared else per_channel(scale, 4))}


def _layer(type_, param="", bottoms=("data",), tops=("out",), name="layer"):
    bottom = "".join(f' bottom: "{b}"' for b in bottoms)
    top = "".join(f' top: "{t}"' for t in tops)
    return f'layer {{ name: "{name}" type: "{type_}"{bottom}{top} {param} }}\n'


def _f64(x):
    return {name: value.astype(np.float64) for name, value in x.items()}


CHANNEL_LAYERS = [
    # Width == channels: the slope must broadcast along the channels, not the width.
    Case(
        "prelu-width-equals-channels",
        _layer("PReLU", name="prelu"),
        {"data": (2, 4, 3, 4)},
        {"prelu": [(4,)]},
        lambda x, w: _prelu(x, w, False),
    ),
    Case(
        "prelu-shared",
        _layer("PReLU", "prelu_param { channel_shared: true }", name="prelu"),
        {"data": (2, 3, 4, 5)},
        {"prelu": [(1,)]},
        lambda x, w: _prelu(x, w, True),
    ),
    Case(
        "prelu-after-inner-product",
        _layer("PReLU", name="prelu"),
        {"data": (3, 6)},
        {"prelu": [(6,)]},
        lambda x, w: _prelu(x, w, False),
    ),
    Case(
        "batchnorm-scale-factor",
        _layer("BatchNorm", name="bn"),
        {"data": (2, 3, 4, 5)},
        fill={"bn": [[0.5, -1.0, 2.0], [0.8, 1.5, 0.1], [0.5]]},
        reference=_batch_norm,
    ),
    Case(
        "batchnorm-eps-2d",
        _layer("BatchNorm", "batch_norm_param { eps: 0.001 }", name="bn"),
        {"data": (4, 3)},
        fill={"bn": [[999.9, -1.0, 2.0], [0.8, 1.5, 0.0], [999.98]]},
        reference=lambda x, w: _batch_norm(x, w, eps=1e-3),
    ),
    # A zero scale factor means zero mean and variance in Caffe, whatever the blobs hold.
    Case(
        "batchnorm-zero-factor",
        _layer("BatchNorm", name="bn"),
        {"data": (2, 3, 4, 5)},
        fill={"bn": [[5.0, -1.0, 2.0], [0.8, 1.5, 0.1], [0.0]]},
        reference=_batch_norm,
    ),
    Case(
        "batchnorm-batch-statistics",
        _layer("BatchNorm", "batch_norm_param { use_global_stats: false }", name="bn"),
        {"data": (3, 2, 4, 5)},
        fill={"bn": [[5.0, -1.0], [0.8, 1.5], [1.0]]},
        reference=_batch_stats,
        opencv_differs="OpenCV always uses the stored statistics",
    ),
    Case(
        "scale-with-bias",
        _layer("Scale", "scale_param { bias_term: true }", name="scale"),
        {"data": (2, 3, 4, 5)},
        {"scale": [(3,), (3,)]},
        lambda x, w: {"out": x["data"] * per_channel(w["scale"][0], 4) + per_channel(w["scale"][1], 4)},
    ),
    Case(
        "scale-two-axes",
        _layer("Scale", "scale_param { axis: 1 num_axes: 2 }", name="scale"),
        {"data": (2, 3, 4, 5)},
        {"scale": [(3, 4)]},
        lambda x, w: {"out": x["data"] * w["scale"][0].reshape(3, 4, 1).astype(np.float64)},
    ),
    Case(
        "scale-scalar",
        _layer("Scale", "scale_param { num_axes: 0 }", name="scale"),
        {"data": (2, 3, 4)},
        {"scale": [()]},
        lambda x, w: {"out": x["data"] * w["scale"][0].astype(np.float64)},
        opencv_differs="OpenCV cannot read a 0-d blob",
    ),
    Case(
        "scale-by-second-input",
        _layer("Scale", bottoms=("data", "factor"), name="scale"),
        {"data": (2, 3, 4, 5), "factor": (3, 4)},
        reference=lambda x, w: {"out": _f64(x)["data"] * _f64(x)["factor"].reshape(3, 4, 1)},
    ),
    Case(
        "bias",
        _layer("Bias", name="bias"),
        {"data": (2, 3, 4, 5)},
        {"bias": [(3,)]},
        lambda x, w: {"out": x["data"] + per_channel(w["bias"][0], 4)},
        opencv_differs="OpenCV has no Bias layer",
    ),
    Case(
        "bias-by-second-input-axis-0",
        _layer("Bias", "bias_param { axis: 0 }", bottoms=("data", "b"), name="bias"),
        {"data": (2, 3, 4), "b": (2, 3)},
        reference=lambda x, w: {"out": _f64(x)["data"] + _f64(x)["b"][..., None]},
        opencv_differs="OpenCV has no Bias layer",
    ),
    *[
        Case(
            f"normalize-{'spatial' if spatial else 'channels'}-{'shared' if shared else 'per-channel'}",
            _layer(
                "Normalize",
                f"norm_param {{ across_spatial: {str(spatial).lower()} channel_shared: {str(shared).lower()} }}",
                name="norm",
            ),
            {"data": (2, 3, 4, 5)},
            {"norm": [(1,) if shared else (3,)]},
            lambda x, w, spatial=spatial, shared=shared: _normalize(x, w, spatial, shared),
            opencv_differs="OpenCV takes no per-channel scale across space" if spatial and not shared else "",
        )
        for spatial in (True, False)
        for shared in (True, False)
    ],
]


def _eltwise_case(id, param, reference, count=3):
    names = tuple(f"in{index}" for index in range(count))
    return Case(
        id,
        _layer("Eltwise", param, bottoms=names),
        {name: (2, 3, 4, 5) for name in names},
        reference=lambda x, w: {"out": reference(*(_f64(x)[name] for name in names))},
    )


SHAPE_LAYERS = [
    _eltwise_case(
        "eltwise-sum-coeff",
        "eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 }",
        lambda a, b, c: a - 0.5 * b + 2 * c,
    ),
    _eltwise_case("eltwise-sum", "", lambda a, b: a + b, count=2),
    _eltwise_case("eltwise-prod", "eltwise_param { operation: PROD }", lambda a, b, c: a * b * c),
    _eltwise_case("eltwise-max", "eltwise_param { operation: MAX }", lambda a, b: np.maximum(a, b), count=2),
    Case(
        "concat-channels",
        _layer("Concat", bottoms=("a", "b", "c")),
        {"a": (2, 1, 3, 4), "b": (2, 3, 3, 4), "c": (2, 2, 3, 4)},
        reference=lambda x, w: {"out": np.concatenate([x["a"], x["b"], x["c"]], axis=1)},
    ),
    Case(
        "concat-dim-2",
        _layer("Concat", "concat_param { concat_dim: 2 }", bottoms=("a", "b")),
        {"a": (2, 3, 1, 4), "b": (2, 3, 2, 4)},
        reference=lambda x, w: {"out": np.concatenate([x["a"], x["b"]], 2)},
        opencv_differs="OpenCV reads no concat_dim",
    ),
    Case(
        "concat-axis-minus-1",
        _layer("Concat", "concat_param { axis: -1 }", bottoms=("a", "b")),
        {"a": (2, 3), "b": (2, 5)},
        reference=lambda x, w: {"out": np.concatenate([x["a"], x["b"]], 1)},
    ),
    Case(
        "flatten", _layer("Flatten"), {"data": (2, 3, 4, 5)}, reference=lambda x, w: {"out": x["data"].reshape(2, -1)}
    ),
    Case(
        "flatten-axis-end-axis",
        _layer("Flatten", "flatten_param { axis: 1 end_axis: 2 }"),
        {"data": (2, 3, 4, 5)},
        reference=lambda x, w: {"out": x["data"].reshape(2, 12, 5)},
    ),
    Case(
        "reshape-copy-infer",
        _layer("Reshape", "reshape_param { shape { dim: 0 dim: -1 dim: 2 } }"),
        {"data": (2, 6, 2, 2)},
        reference=lambda x, w: {"out": x["data"].reshape(2, 12, 2)},
    ),
    Case(
        "reshape-axis-num-axes",
        _layer("Reshape", "reshape_param { shape { dim: -1 } axis: 1 num_axes: 2 }"),
        {"data": (2, 3, 4, 5)},
        reference=lambda x, w: {"out": x["data"].reshape(2, 12, 5)},
    ),
    Case(
        "reshape-append-axes",
        _layer("Reshape", "reshape_param { shape { dim: 1 dim: 1 } axis: -1 num_axes: 0 }"),
        {"data": (2, 3)},
        reference=lambda x, w: {"out": x["data"].reshape(2, 3, 1, 1)},
        opencv_differs="OpenCV cannot append axes at axis -1",
    ),
    Case(
        "permute-nhwc",
        _layer("Permute", "permute_param { order: 0 order: 2 order: 3 order: 1 }"),
        {"data": (2, 3, 4, 5)},
        reference=lambda x, w: {"out": x["data"].transpose(0, 2, 3, 1)},
    ),
    Case(
        "permute-partial-order",
        _layer("Permute", "permute_param { order: 0 order: 2 }"),
        {"data": (2, 3, 4, 5)},
        reference=lambda x, w: {"out": x["data"].transpose(0, 2, 1, 3)},
        opencv_differs="OpenCV needs the whole order",
    ),
    Case(
        "split",
        _layer("Split", tops=("a", "b")),
        {"data": (2, 3)},
        reference=lambda x, w: {"a": x["data"], "b": x["data"]},
        opencv_differs="OpenCV keeps one output of a Split",
    ),
    Case(
        "slice-points",
        _layer("Slice", "slice_param { axis: 1 slice_point: 1 slice_point: 3 }", tops=("a", "b", "c")),
        {"data": (2, 5, 3, 3)},
        reference=lambda x, w: dict(zip("abc", np.split(x["data"], [1, 3], axis=1), strict=True)),
    ),
    Case(
        "slice-dim-equal",
        _layer("Slice", "slice_param { slice_dim: 2 }", tops=("a", "b")),
        {"data": (2, 3, 4, 5)},
        reference=lambda x, w: dict(zip("ab", np.split(x["data"], 2, axis=2), strict=True)),
        opencv_differs="OpenCV reads no slice_dim",
    ),
    Case(
        "crop-offsets",
        _layer("Crop", "crop_param { axis: 2 offset: 1 offset: 2 }", bottoms=("data", "like")),
        {"data": (2, 3, 8, 9), "like": (1, 1, 5, 6)},
        reference=lambda x, w: {"out": x["data"][:, :, 1:6, 2:8]},
    ),
    Case(
        "crop-default",
        _layer("Crop", bottoms=("data", "like")),
        {"data": (2, 3, 8, 9), "like": (2, 3, 5, 6)},
        reference=lambda x, w: {"out": x["data"][:, :, :5, :6]},
    ),
    Case(
        "crop-one-offset-axis-1",
        _layer("Crop", "crop_param { axis: 1 offset: 1 }", bottoms=("data", "like")),
        {"data": (2, 4, 6, 6), "like": (2, 2, 3, 4)},
        reference=lambda x, w: {"out": x["data"][:, 1:3, 1:4, 1:5]},
    ),
]


def _prior_case(id, param, feature, image, opencv_differs="", **reference):
    layers = _layer("PriorBox", f"prior_box_param {{ {param} }}", bottoms=("feature", "data"))
    return Case(
        id,
        layers,
        {"feature": feature, "data": image},
        opencv_differs=opencv_differs,
        reference=lambda x, w: {"out": ref_prior_box(feature[2:], image[2:], **reference)},
    )


PRIOR_BOXES = [
    # Fractional sizes: Caffe truncates them to ints, OpenCV does not (test_opencv_prior_box_differs_from_caffe_...).
    _prior_case(
        "priorbox-fractional-sizes",
        "min_size: 10.5 min_size: 20 max_size: 15.7 max_size: 30.2 aspect_ratio: 2 aspect_ratio: 3 flip: true "
        "clip: true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2",
        (1, 8, 5, 4),
        (1, 3, 40, 32),
        opencv_differs="OpenCV keeps fractional sizes",
        min_sizes=(10.5, 20),
        max_sizes=(15.7, 30.2),
        aspect_ratios=(2, 3),
        variance=(0.1, 0.1, 0.2, 0.2),
    ),
    _prior_case(
        "priorbox-ssd300",
        "min_size: 30 max_size: 60 aspect_ratio: 2 flip: true clip: false variance: 0.1 variance: 0.1 "
        "variance: 0.2 variance: 0.2 step: 8 offset: 0.5",
        (1, 4, 38, 38),
        (1, 3, 300, 300),
        min_sizes=(30,),
        max_sizes=(60,),
        aspect_ratios=(2,),
        clip=False,
        variance=(0.1, 0.1, 0.2, 0.2),
        step_hw=(8, 8),
    ),
    _prior_case(
        "priorbox-img-size-step-one-variance",
        "min_size: 16 min_size: 32 aspect_ratio: 2 aspect_ratio: 2 aspect_ratio: 0.5 flip: false clip: false "
        "variance: 0.2 img_size: 64 step: 8.5 offset: 0.25",
        (1, 2, 3, 5),
        (1, 3, 48, 80),
        min_sizes=(16, 32),
        aspect_ratios=(2, 2, 0.5),
        flip=False,
        clip=False,
        variance=(0.2,),
        img_hw=(64, 64),
        step_hw=(8.5, 8.5),
        offset=0.25,
        opencv_differs="OpenCV divides by the input's size, not img_size",
    ),
    _prior_case(
        "priorbox-defaults",
        "min_size: 20",
        (1, 2, 4, 6),
        (1, 3, 40, 60),
        min_sizes=(20,),
        opencv_differs="OpenCV has no default variance",
    ),
]

CASES = CONVOLUTIONS + INNER_PRODUCTS + POOLINGS + ACTIVATIONS + CHANNEL_LAYERS + SHAPE_LAYERS + PRIOR_BOXES


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_layer_matches_a_numpy_transcription_of_caffe(case, tmp_path):
    net = read_net(tmp_path, case.prototxt())
    inputs, weights = case.arrays()
    outputs = run(export(net, weights), inputs)
    expected = case.reference(inputs, weights)
    assert sorted(outputs) == sorted(expected)
    for name, values in expected.items():
        assert_close(outputs[name], values, f"{case.id} output '{name}'")


@pytest.mark.parametrize("case", [case for case in CASES if not case.opencv_differs], ids=lambda case: case.id)
def test_layer_matches_opencv(case, tmp_path, cv2):
    net = read_net(tmp_path, case.prototxt())
    inputs, weights = case.arrays(seed=1)
    outputs = run(export(net, weights), inputs)
    write_caffemodel(net, weights, tmp_path / "net.caffemodel")
    names = sorted(outputs)
    theirs = opencv_forward(cv2, tmp_path / "net.prototxt", tmp_path / "net.caffemodel", inputs, names)
    for name, values in zip(names, theirs, strict=True):
        assert_close(outputs[name], values.reshape(outputs[name].shape), f"{case.id} output '{name}' against OpenCV")


# --- LeNet ----------------------------------------------------------------------------------------------------------

LENET_DEPLOY = CAFFE_DIR / "lenet_deploy.prototxt"
LENET_WEIGHTS = SHARED_MODELS / "lenet_iter_10000.caffemodel"


@pytest.fixture
def lenet(tmp_path):
    """The deploy LeNet and a caffemodel for it: the trained one from ../shared/models, else the synthetic one."""
    if LENET_WEIGHTS.exists():
        return netproto.read_prototxt(LENET_DEPLOY), LENET_WEIGHTS
    path = tmp_path / "lenet.caffemodel"
    api.save_model(build_model(seed=0), path)
    return netproto.read_prototxt(LENET_DEPLOY), path


def ref_lenet(image, weights):
    def dense(x, name):
        return x.reshape(len(x), -1) @ weights[name][0].astype(np.float64).T + weights[name][1]

    conv1 = ref_convolution(image.astype(np.float64), *weights["conv1"], (1, 1), (0, 0), (1, 1), 1)
    pool1 = ref_pooling(conv1, "MAX", (2, 2), (2, 2), (0, 0))
    conv2 = ref_convolution(pool1, *weights["conv2"], (1, 1), (0, 0), (1, 1), 1)
    pool2 = ref_pooling(conv2, "MAX", (2, 2), (2, 2), (0, 0))
    return ref_softmax(dense(np.maximum(dense(pool2, "fc1"), 0), "fc2"), 1)


def test_lenet_matches_numpy(lenet):
    net, caffemodel = lenet
    weights = api.load_weights(caffemodel)
    model = export(net, weights)
    assert [value.name for value in model.graph.output] == ["prob"]
    image = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)  # the prototxt's batch of 8
    assert_close(run(model, {"data": image})["prob"], ref_lenet(image, weights), "LeNet")


def test_lenet_matches_opencv(lenet, cv2):
    net, caffemodel = lenet
    image = np.random.default_rng(1).random((8, 1, 28, 28), dtype=np.float32)
    ours = run(export(net, api.load_weights(caffemodel)), {"data": image})["prob"]
    (theirs,) = opencv_forward(cv2, LENET_DEPLOY, caffemodel, {"data": image}, ["prob"])
    assert_close(ours, theirs, "LeNet against OpenCV")


def test_input_shapes_override_the_prototxts(lenet):
    net, caffemodel = lenet
    weights = api.load_weights(caffemodel)
    model = export(net, weights, input_shapes={"data": (3, 1, 28, 28)})
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [3, 1, 28, 28]
    image = np.random.default_rng(2).random((3, 1, 28, 28), dtype=np.float32)
    assert_close(run(model, {"data": image})["prob"], ref_lenet(image, weights), "LeNet, batch of 3")


def test_input_shapes_must_name_the_nets_inputs(lenet):
    net, caffemodel = lenet
    with pytest.raises(
        UsageError,
        match=r"input_shapes names \['image'\], which the net has no input called; its "
        r"inputs: \['data'\]",
    ):
        onnx_export.to_onnx(net, api.load_weights(caffemodel), input_shapes={"image": (1, 1, 28, 28)})


def test_an_input_without_a_shape_needs_input_shapes(tmp_path):
    net = read_net(tmp_path, 'input: "data"\n' + _layer("ReLU"))
    with pytest.raises(UsageError, match="the net's input 'data' has no shape; give it in input_shapes"):
        onnx_export.to_onnx(net, {})
    model = export(net, {}, input_shapes={"data": (2, 3)})
    values = np.array([[-1, 0, 2], [3, -4, 5]], dtype=np.float32)
    assert np.array_equal(run(model, {"data": values})["out"], np.maximum(values, 0))


def test_legacy_input_dim_gives_the_shape(tmp_path):
    net = read_net(tmp_path, 'input: "data"\ninput_dim: 2\ninput_dim: 3\ninput_dim: 4\ninput_dim: 5\n' + _layer("TanH"))
    model = export(net, {})
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [2, 3, 4, 5]


def test_in_place_layers_keep_caffes_blob_names(lenet):
    net, caffemodel = lenet
    model = export(net, api.load_weights(caffemodel))
    writers = {output: node.name for node in model.graph.node for output in node.output}
    # fc1 is written by fc1, then in place by relu1: the blob's name goes to its last value.
    assert writers["fc1"].startswith("relu1:")
    assert writers["fc1/fc1"].startswith("fc1:")
    assert writers["prob"].startswith("prob:")


def test_export_is_deterministic(lenet):
    net, caffemodel = lenet
    weights = api.load_weights(caffemodel)
    assert onnx_export.onnx_bytes(net, weights) == onnx_export.onnx_bytes(net, weights)


def test_opset_and_ir_version_are_pinned(lenet):
    net, caffemodel = lenet
    model = export(net, api.load_weights(caffemodel))
    assert onnx_export.OPSET_VERSION >= 13
    assert [(o.domain, o.version) for o in model.opset_import] == [("", onnx_export.OPSET_VERSION)]
    assert model.ir_version == onnx_export.IR_VERSION
    assert model.producer_name == "cmpstore"


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_float16_and_float64_blobs_become_float32(lenet, dtype):
    net, caffemodel = lenet
    weights = {name: [blob.astype(dtype) for blob in blobs] for name, blobs in api.load_weights(caffemodel).items()}
    model = export(net, weights)
    initializers = {init.name: onnx.numpy_helper.to_array(init) for init in model.graph.initializer}
    assert {array.dtype for array in initializers.values() if array.dtype.kind == "f"} == {np.dtype(np.float32)}
    assert np.array_equal(initializers["conv1/weight"], weights["conv1"][0].astype(np.float32))
    image = np.random.default_rng(3).random((8, 1, 28, 28), dtype=np.float32)
    upcast = {name: [blob.astype(np.float64) for blob in blobs] for name, blobs in weights.items()}
    assert_close(run(model, {"data": image})["prob"], ref_lenet(image, upcast), f"LeNet with {dtype} blobs")


def test_missing_weights_name_the_layer(lenet):
    net, caffemodel = lenet
    weights = api.load_weights(caffemodel)
    del weights["fc2"]
    with pytest.raises(
        ModelError, match="layer 'fc2': the weights hold no blobs for this InnerProduct layer; it needs blob 0"
    ):
        onnx_export.to_onnx(net, weights)


def test_blobs_of_the_wrong_size_name_the_layer(lenet):
    net, caffemodel = lenet
    weights = api.load_weights(caffemodel)
    weights["conv2"][0] = weights["conv2"][0][:10]
    with pytest.raises(
        ModelError,
        match=r"layer 'conv2': blob 0 has the shape \[10, 20, 5, 5\], the layer needs "
        r"\[50, 20, 5, 5\]",
    ):
        onnx_export.to_onnx(net, weights)


# --- what is refused, left out or stopped at ------------------------------------------------------------------------


def test_an_unknown_layer_type_is_refused_naming_the_layer_and_its_type(tmp_path):
    net = read_net(tmp_path, Case("x", _layer("Frobnicate", name="odd"), {"data": (1, 2)}).prototxt())
    with pytest.raises(UsageError, match=r"^layer 'odd': layer type 'Frobnicate' cannot be exported to ONNX \("):
        onnx_export.to_onnx(net, {})


def test_stochastic_pooling_is_refused(tmp_path):
    layers = _layer("Pooling", "pooling_param { pool: STOCHASTIC kernel_size: 2 }", name="pool")
    net = read_net(tmp_path, Case("x", layers, {"data": (1, 2, 4, 4)}).prototxt())
    with pytest.raises(UsageError, match="layer 'pool': Pooling with STOCHASTIC pooling cannot be exported"):
        onnx_export.to_onnx(net, {})


def test_a_pooling_window_entirely_outside_its_input_is_refused(tmp_path):
    layers = _layer("Pooling", "pooling_param { pool: MAX kernel_size: 1 stride: 3 }", name="pool")
    net = read_net(tmp_path, Case("x", layers, {"data": (1, 2, 5, 5)}).prototxt())
    with pytest.raises(UsageError, match="layer 'pool': Pooling with kernel .* has a last window entirely outside"):
        onnx_export.to_onnx(net, {})


def test_a_transposed_weight_of_the_right_size_is_refused(lenet):
    net, caffemodel = lenet
    weights = api.load_weights(caffemodel)
    weights["fc2"][0] = weights["fc2"][0].T
    with pytest.raises(ModelError, match=r"layer 'fc2': blob 0 has the shape \[500, 10\], the layer needs \[10, 500\]"):
        onnx_export.to_onnx(net, weights)


def test_legacy_4d_blob_shapes_are_read_by_count(lenet):
    net, caffemodel = lenet
    weights = api.load_weights(caffemodel)
    legacy = dict(weights, fc2=[weights["fc2"][0].reshape(1, 1, 10, 500), weights["fc2"][1].reshape(1, 1, 1, 10)])
    image = np.random.default_rng(4).random((8, 1, 28, 28), dtype=np.float32)
    assert np.array_equal(
        run(export(net, legacy), {"data": image})["prob"], run(export(net, weights), {"data": image})["prob"]
    )


def test_a_legacy_v1_net_is_refused(tmp_path):
    net = read_net(tmp_path, 'input: "data"\nlayers { name: "relu" type: RELU bottom: "data" top: "data" }\n')
    with pytest.raises(UsageError, match="legacy V1 'layers' field; upgrade it with Caffe's upgrade_net_proto_text"):
        onnx_export.to_onnx(net, {}, input_shapes={"data": (1, 2)})


def test_without_onnx_the_error_names_the_extra(lenet, monkeypatch):
    net, caffemodel = lenet
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(UsageError, match=r"needs the onnx package: pip install 'cmpstore\[onnx\]'"):
        onnx_export.to_onnx(net, api.load_weights(caffemodel))


def test_layers_outside_the_test_phase_are_left_out(tmp_path):
    layers = (
        _layer("Frobnicate", "include { phase: TRAIN }", name="train_only", tops=("loss",))
        + _layer("Frobnicate", "exclude { phase: TEST }", name="not_in_test", tops=("other",))
        + _layer("ReLU", "include { phase: TEST }")
    )
    model = export(read_net(tmp_path, Case("x", layers, {"data": (1, 2)}).prototxt()), {})
    assert [value.name for value in model.graph.output] == ["out"]
    assert [node.op_type for node in model.graph.node] == ["Relu"]


def test_dropout_and_split_are_identities_without_attributes(tmp_path):
    layers = _layer("Dropout", "dropout_param { dropout_ratio: 0.3 }", tops=("dropped",)) + _layer(
        "Split", bottoms=("dropped",), tops=("a", "b"), name="split"
    )
    model = export(read_net(tmp_path, Case("x", layers, {"data": (1, 2)}).prototxt()), {})
    assert [(node.op_type, len(node.attribute)) for node in model.graph.node] == [("Identity", 0)] * 3


SSD_HEAD = """
layer { name: "loc" type: "Convolution" bottom: "data" top: "loc"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "loc_perm" type: "Permute" bottom: "loc" top: "loc_perm"
        permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "loc_flat" type: "Flatten" bottom: "loc_perm" top: "loc_flat" }
layer { name: "conf" type: "Convolution" bottom: "data" top: "conf" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "conf_flat" type: "Flatten" bottom: "conf" top: "conf_flat" }
layer { name: "priors" type: "PriorBox" bottom: "loc" bottom: "data" top: "priors"
        prior_box_param { min_size: 4 aspect_ratio: 2 flip: false variance: 0.1 } }
layer { name: "detection_out" type: "DetectionOutput" bottom: "loc_flat" bottom: "conf_flat" bottom: "priors"
        top: "detection_out" detection_output_param { num_classes: 2 } }
layer { name: "after" type: "Power" bottom: "detection_out" top: "scaled" }
"""


def test_detection_output_ends_the_graph_at_its_inputs(tmp_path):
    net = read_net(tmp_path, Case("ssd", SSD_HEAD, {"data": (1, 3, 6, 6)}).prototxt())
    rng = np.random.default_rng(0)
    weights = {
        "loc": [rng.standard_normal((8, 3, 3, 3)), rng.standard_normal(8)],
        "conf": [rng.standard_normal((4, 3, 1, 1)), rng.standard_normal(4)],
    }
    notice = (
        "the ONNX graph stops before 'detection_out' (DetectionOutput), 'after' (Power): its outputs are 'loc_flat', "
        "'conf_flat', 'priors', from which to compute those layers"
    )
    with pytest.warns(UserWarning, match=f"^{notice.replace('(', '[(]').replace(')', '[)]')}$"):
        model = export(net, weights)
    assert [value.name for value in model.graph.output] == ["loc_flat", "conf_flat", "priors"]
    assert model.doc_string == notice
    assert {prop.key: prop.value for prop in model.metadata_props} == {
        "cmpstore.not_exported": "'detection_out' (DetectionOutput), 'after' (Power)"
    }
    outputs = run(model, {"data": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)})
    assert outputs["loc_flat"].shape == (1, 6 * 6 * 8) and outputs["priors"].shape == (1, 2, 6 * 6 * 2 * 4)


def test_opencv_prior_box_differs_from_caffe_only_by_keeping_fractional_sizes(tmp_path, cv2):
    case = next(case for case in PRIOR_BOXES if case.id == "priorbox-fractional-sizes")
    net = read_net(tmp_path, case.prototxt())
    inputs, _ = case.arrays()
    ours = run(export(net, {}), inputs)["out"]
    write_caffemodel(net, {}, tmp_path / "net.caffemodel")
    (as_written,) = opencv_forward(cv2, tmp_path / "net.prototxt", tmp_path / "net.caffemodel", inputs, ["out"])
    assert differences(ours, as_written)[0] > 100 * MAX_ABS
    truncated = tmp_path / "truncated.prototxt"
    truncated.write_text(netproto.to_text(_with_integer_prior_sizes(net)))
    (caffes,) = opencv_forward(cv2, truncated, tmp_path / "net.caffemodel", inputs, ["out"])
    assert_close(ours, caffes, "PriorBox against OpenCV given Caffe's integer sizes")


def _with_integer_prior_sizes(net):
    """The net with PriorBox min/max sizes truncated to ints, as SSD Caffe's PriorBoxLayer uses them."""
    copy = netproto.NetParameter()
    copy.CopyFrom(net)
    for layer in copy.layer:
        if layer.type == "PriorBox":
            params = layer.prior_box_param
            for sizes in (params.min_size, params.max_size):
                sizes[:] = [float(int(size)) for size in sizes]
    return copy


# --- the real-model corpus ------------------------------------------------------------------------------------------

#: Each corpus model's deploy net, from the same distribution (tests/real_models.py).
DEPLOY_NETS = real_models.DEPLOY_NETS
WITHOUT_DEPLOY_NET = real_models.WITHOUT_DEPLOY_NET


def test_every_corpus_model_has_a_deploy_net_or_a_reason():
    assert sorted([*DEPLOY_NETS, *WITHOUT_DEPLOY_NET]) == sorted(model.name for model in real_models.MODELS)


@pytest.mark.corpus
@pytest.mark.parametrize(
    "real", [model for model in real_models.MODELS if model.name in DEPLOY_NETS], ids=lambda model: model.name
)
def test_corpus_net_matches_opencv(real, cv2, archives, tmp_path):  # noqa: F811 - archives is the imported fixture
    archive = archives[real.distribution.filename]
    caffemodel = tmp_path / "model.caffemodel"
    caffemodel.write_bytes(real_models.read_member(archive, real.member))
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_bytes(real_models.read_member(archive, DEPLOY_NETS[real.name]))
    net = netproto.read_prototxt(prototxt)
    stops = [layer for layer in net.layer if layer.type in onnx_export.STOP_TYPES]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = export(net, api.load_weights(caffemodel))
    outputs = [value.name for value in model.graph.output]
    if stops:
        assert outputs == list(stops[0].bottom)
        assert [str(warning.message) for warning in caught] == [model.doc_string]
    (graph_input,) = model.graph.input
    shape = tuple(d.dim_value for d in graph_input.type.tensor_type.shape.dim)
    image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ours = run(model, {graph_input.name: image})
    # OpenCV keeps PriorBox's fractional sizes where Caffe truncates them: give it Caffe's (a no-op for most nets).
    for_opencv = tmp_path / "opencv.prototxt"
    for_opencv.write_text(netproto.to_text(_with_integer_prior_sizes(net)))
    theirs = opencv_forward(cv2, for_opencv, caffemodel, {graph_input.name: image}, outputs)
    for name, values in zip(outputs, theirs, strict=True):
        max_abs, rel_l2 = differences(ours[name], values.reshape(ours[name].shape))
        print(f"{real.name} {name} {list(ours[name].shape)}: max abs {max_abs:.3g}, relative L2 {rel_l2:.3g}")
        assert_close(ours[name], values.reshape(ours[name].shape), f"{real.name} output '{name}' against OpenCV")


# --- compact: shared blobs as a codebook and uint8 indices --------------------------------------------------------


@pytest.fixture(scope="module")
def shared_lenet(tmp_path_factory):
    """The synthetic LeNet, pruned and weight-shared (at most 148 distinct values a layer), as a .cmps."""
    path = tmp_path_factory.mktemp("compact") / "lenet.cmps"
    api.encode(build_model(seed=0), path)
    return path


def test_compact_export_computes_the_same_bits_in_a_third_of_the_bytes(shared_lenet, tmp_path):
    dense = api.export_onnx(shared_lenet, LENET_DEPLOY, tmp_path / "dense.onnx")
    compact = api.export_onnx(shared_lenet, LENET_DEPLOY, tmp_path / "compact.onnx", compact=True)
    assert (tmp_path / "compact.onnx").read_bytes() == compact
    assert len(compact) < len(dense) / 3
    model = onnx.load_from_string(compact)
    onnx.checker.check_model(model, full_check=True)
    shared = {node.output[0] for node in model.graph.node if node.op_type == "Gather"}
    assert shared == {f"{layer}/weight" for layer in ("conv1", "conv2", "fc1", "fc2")} - {"conv1/weight"}
    image = np.random.default_rng(3).random((8, 1, 28, 28), dtype=np.float32)
    ours = run(model, {"data": image})["prob"]
    assert np.array_equal(ours, run(onnx.load_from_string(dense), {"data": image})["prob"])


def test_compact_keeps_every_bit_pattern_and_leaves_unshared_blobs_dense(tmp_path):
    net = read_net(
        tmp_path,
        'input: "data" input_shape { dim: 1 dim: 2048 }\n'
        'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "out" '
        "inner_product_param { num_output: 2 } }",
    )
    rng = np.random.default_rng(5)
    shared_row = rng.choice(np.array([0.0, -0.0, 0.5, -1.25], dtype=np.float32), 2048)
    weights = {"fc": [np.stack([shared_row, shared_row]), np.array([0.0, 1.0], np.float32)]}
    model = onnx_export.to_onnx(net, weights, compact=True)
    onnx.checker.check_model(model, full_check=True)
    (gather,) = [node for node in model.graph.node if node.op_type == "Gather"]
    initializers = {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    codebook = initializers[gather.input[0]]
    # -0.0 and +0.0 are two entries: the gathered weight has the stored bits, not just equal values.
    assert sorted(codebook.view(np.uint32).tolist()) == np.unique(shared_row.view(np.uint32)).tolist()
    assert [array.shape for array in initializers.values() if array.dtype == np.uint8] == [(2, 2048)]
    data = rng.normal(size=(1, 2048)).astype(np.float32)
    dense = onnx_export.to_onnx(net, weights)
    assert np.array_equal(run(model, {"data": data})["out"], run(dense, {"data": data})["out"])
    many = rng.normal(size=2048).astype(np.float32)  # 2,048 distinct values: stored as they are
    weights["fc"][0] = np.stack([many, many])
    unshared = onnx_export.to_onnx(net, weights, compact=True)
    assert not [node for node in unshared.graph.node if node.op_type == "Gather"]
    assert unshared.SerializeToString() == onnx_export.onnx_bytes(net, weights)


def test_cli_export_compact(shared_lenet, tmp_path):
    from common import run_cli

    code, out, errors = run_cli(
        "export", shared_lenet, "--prototxt", LENET_DEPLOY, "--compact", "-o", tmp_path / "lenet.onnx"
    )
    assert code == 0, errors
    assert "ONNX" in out
    model = onnx.load(str(tmp_path / "lenet.onnx"))
    assert any(node.op_type == "Gather" for node in model.graph.node)

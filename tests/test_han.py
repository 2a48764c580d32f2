"""Import of the Deep Compression authors' released format, on files written here in that layout."""

import numpy as np
import pytest
from common import assert_bit_identical, run_cli

from cmpstore import api
from cmpstore.caffe.han import import_han
from cmpstore.errors import ModelError

PROTOTXT = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 6 kernel_size: 3 stride: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc1" type: "InnerProduct" bottom: "pool1" top: "fc1" inner_product_param { num_output: 7 } }
layer { name: "fc2" type: "InnerProduct" bottom: "fc1" top: "fc2" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "fc2" top: "prob" }
"""
SHAPES = {"conv1": ((6, 3, 3, 3), 6), "fc1": ((7, 150), 7), "fc2": ((3, 7), 3)}


def han_entries(weights: np.ndarray, codebook: np.ndarray):
    """The format's entries by a plain loop: (gap - 1, codebook index), fillers every 16."""
    entries = []
    previous = -1
    for position in np.flatnonzero(weights):
        gap = position - previous
        while gap > 16:
            entries.append((15, 0))
            gap -= 16
        entries.append((gap - 1, int(np.flatnonzero(codebook == weights[position])[0])))
        previous = position
    return entries


def pack(values, bits):
    values = list(values)
    if bits == 8:
        return bytes(values)
    if len(values) % 2:
        values.append(0)
    return bytes(low | (high << 4) for low, high in zip(values[::2], values[1::2], strict=True))


def write_han_file(path, seed):
    rng = np.random.default_rng(seed)
    expected = {}
    header, body = [], b""
    for name, (shape, bias_size) in SHAPES.items():
        bits = 8 if "conv" in name else 4
        codebook = np.concatenate([[0.0], np.sort(rng.normal(size=(1 << bits) - 1))]).astype("<f4")
        weights = codebook[rng.integers(1, 1 << bits, size=int(np.prod(shape)))]
        weights[rng.random(weights.size) < 0.85] = 0.0  # sparse enough for gaps over 16
        bias = rng.normal(size=bias_size).astype("<f4")
        entries = han_entries(weights, codebook)
        header.append(len(entries))
        body += codebook.tobytes() + bias.tobytes()
        body += pack([code for _, code in entries], bits) + pack([gap for gap, _ in entries], 4)
        expected[name] = [weights.reshape(shape), bias]
    path.write_bytes(np.array(header, dtype="<u4").tobytes() + body)
    return expected, header


@pytest.mark.parametrize("seed", range(6))
def test_import_matches_the_weights_written(tmp_path, seed):
    (tmp_path / "deploy.prototxt").write_text(PROTOTXT)
    expected, entry_counts = write_han_file(tmp_path / "tiny.net", seed)
    model = import_han(tmp_path / "tiny.net", tmp_path / "deploy.prototxt")
    weights = api.weights_by_layer(model)
    assert set(weights) == set(SHAPES)
    for name, blobs in expected.items():
        assert_bit_identical(weights[name][0], blobs[0])
        assert_bit_identical(weights[name][1], blobs[1])
    if seed == 0:
        assert any(count % 2 for count in entry_counts), "want layers with an odd number of entries"


def test_cli_import_then_decode(tmp_path):
    (tmp_path / "deploy.prototxt").write_text(PROTOTXT)
    expected, _ = write_han_file(tmp_path / "tiny.net", 7)
    code, out, err = run_cli(
        "import-han", tmp_path / "tiny.net", "--prototxt", tmp_path / "deploy.prototxt", "-o", tmp_path / "tiny.cmps"
    )
    assert code == 0, err
    code, _, err = run_cli("decode", tmp_path / "tiny.cmps", "-o", tmp_path / "tiny.caffemodel")
    assert code == 0, err
    weights = api.load_weights(tmp_path / "tiny.caffemodel")
    assert_bit_identical(weights["fc1"][0], expected["fc1"][0])


def test_truncated_and_overlong_files(tmp_path):
    (tmp_path / "deploy.prototxt").write_text(PROTOTXT)
    write_han_file(tmp_path / "tiny.net", 1)
    data = (tmp_path / "tiny.net").read_bytes()
    (tmp_path / "cut.net").write_bytes(data[:-5])
    with pytest.raises(ModelError, match="cut.net: .*need .* bytes, only .* remain"):
        import_han(tmp_path / "cut.net", tmp_path / "deploy.prototxt")
    (tmp_path / "long.net").write_bytes(data + b"\0\0")
    with pytest.raises(ModelError, match="2 bytes left after the last layer"):
        import_han(tmp_path / "long.net", tmp_path / "deploy.prototxt")


@pytest.mark.parametrize(
    "conv, message",
    [
        ("num_output: 6 kernel_size: 3 group: 0", "group 0: a group count must be at least 1"),
        ("num_output: 6 kernel_size: 3 group: 2", "group 2 does not divide the 3 input channels"),
        ("num_output: 7 kernel_size: 3 group: 3", "group 3 does not divide num_output 7"),
        ("num_output: 0 kernel_size: 3", "num_output 0: a convolution needs at least one output"),
        ("num_output: 6 kernel_size: 3 kernel_h: 3 kernel_w: 3", "kernel_size and kernel_h/kernel_w are both set"),
        ("num_output: 6 kernel_size: 3 kernel_size: 3 kernel_size: 3", "3 values of kernel_size for a 2-D"),
    ],
)
def test_convolutions_caffe_would_refuse_are_refused(tmp_path, conv, message):
    """import-han writes nothing Caffe's BaseConvolutionLayer would abort on."""
    write_han_file(tmp_path / "tiny.net", 0)
    (tmp_path / "deploy.prototxt").write_text(PROTOTXT.replace("num_output: 6 kernel_size: 3 stride: 1", conv))
    with pytest.raises(ModelError, match=f"layer 'conv1'.*{message}"):
        import_han(tmp_path / "tiny.net", tmp_path / "deploy.prototxt")


@pytest.mark.parametrize(("ceil_mode", "fc1_inputs"), [("", 6 * 3 * 3), ("ceil_mode: false", 6 * 2 * 2)])
def test_pooling_rounds_as_ceil_mode_says(tmp_path, ceil_mode, fc1_inputs):
    """conv1 leaves 5x5; 2x2 pooling with stride 2 makes that 3x3 rounded up (Caffe's default), 2x2 rounded down."""
    from cmpstore.caffe import netproto
    from cmpstore.caffe.shapes import parameter_shapes

    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text(
        PROTOTXT.replace("dim: 12 dim: 12", "dim: 7 dim: 7").replace(
            "kernel_size: 2 stride: 2 }", f"kernel_size: 2 stride: 2 {ceil_mode} }}"
        )
    )
    assert parameter_shapes(netproto.read_prototxt(prototxt))["fc1"][0] == (7, fc1_inputs)

"""Decoded models run in a real Caffe and compute exactly what the original files compute.

Each test runs Caffe in a subprocess (tests/caffe/worker.py) on the original
and on the decoded weights, with the same seeded inputs, and compares every
blob of the forward pass for equality (max abs difference 0).
"""

import numpy as np
import pytest
from common import CAFFE_DIR, pycaffe_env, run_caffe, run_cli, shared_model

from cmpstore import api
from cmpstore.caffe import netproto
from cmpstore.caffe.caffemodel import join_caffemodel
from cmpstore.caffe.model import Model
from cmpstore.compression.transform import compress_weights

pytestmark = pytest.mark.caffe

LENET_DEPLOY = str(CAFFE_DIR / "lenet_deploy.prototxt")
ZOO_DEPLOY = str(CAFFE_DIR / "zoo_deploy.prototxt")


def forward(env, net, weights, out):
    run_caffe(env, "forward", net, str(weights), str(out))
    with np.load(out) as blobs:
        return {name: blobs[name] for name in blobs.files}


def assert_same_outputs(actual: dict, expected: dict):
    assert actual.keys() == expected.keys()
    for name in expected:
        assert np.array_equal(actual[name], expected[name]), f"blob {name!r} differs"
    assert any(np.count_nonzero(blob) for blob in expected.values())


def encode_decode(tmp_path, source, *decode_options, suffix=".caffemodel", name="decoded"):
    encoded = tmp_path / f"{name}.cmps"
    decoded = tmp_path / f"{name}{suffix}"
    code, _, err = run_cli("encode", source, "-o", encoded, "-q")
    assert code == 0, err
    code, _, err = run_cli("decode", encoded, "-o", decoded, "-q", *decode_options)
    assert code == 0, err
    return decoded


@pytest.mark.parametrize("suffix", [".caffemodel", ".caffemodel.h5"])
def test_lenet_decoded_runs_identically(tmp_path, suffix):
    env = pycaffe_env()
    original = shared_model("lenet_pq_seed_schedule.caffemodel")
    decoded = encode_decode(tmp_path, original, suffix=suffix)
    expected = forward(env, LENET_DEPLOY, original, tmp_path / "expected.npz")
    assert_same_outputs(forward(env, LENET_DEPLOY, decoded, tmp_path / "actual.npz"), expected)


@pytest.mark.parametrize("suffix", [".caffemodel", ".caffemodel.h5"])
def test_layer_zoo_decoded_runs_identically(tmp_path, suffix):
    """Grouped and bias-less conv, Deconvolution, BatchNorm+Scale, PReLU, transposed InnerProduct."""
    env = pycaffe_env()
    dense = tmp_path / "zoo.caffemodel"
    run_caffe(env, "create", ZOO_DEPLOY, str(dense))
    pruned = tmp_path / "zoo_pq.caffemodel"
    model, _ = compress_weights(api.load_model(dense), {"conv": 0.6, "fc": 0.8}, {"conv": 16, "fc": 4})
    api.save_model(model, pruned)
    weights = api.load_weights(pruned)
    assert np.count_nonzero(weights["up"][0]) < weights["up"][0].size  # the Deconvolution was pruned too
    decoded = encode_decode(tmp_path, pruned, suffix=suffix)
    expected = forward(env, ZOO_DEPLOY, pruned, tmp_path / "expected.npz")
    assert_same_outputs(forward(env, ZOO_DEPLOY, decoded, tmp_path / "actual.npz"), expected)


def test_deploy_turns_cmp_layers_into_ones_stock_caffe_runs(tmp_path):
    """A model saved by the fork names CmpConvolution/CmpInnerProduct; decode --deploy makes it stock."""
    env = pycaffe_env()
    original = shared_model("lenet_pq_seed_schedule.caffemodel")
    model = api.load_model(original)
    net = netproto.parse_skeleton(model.skeleton)
    for layer in net.layer:
        if layer.type == "Convolution":
            layer.type = "CmpConvolution"
            layer.convolution_param.sparse_ratio = 0.5
        elif layer.type == "InnerProduct":
            layer.type = "CmpInnerProduct"
            layer.inner_product_param.sparse_ratio = 0.9
            layer.inner_product_param.quantize_term = True
    fork_file = tmp_path / "fork.caffemodel"
    fork_file.write_bytes(b"".join(join_caffemodel(Model(net.SerializeToString(), model.payloads))))

    def own_net(decoded):
        """The net definition the decoded file itself carries, with an Input layer for data."""
        net = netproto.parse_skeleton(api.load_model(decoded).skeleton)
        prototxt = netproto.NetParameter(name=net.name)
        prototxt.layer.add(name="data", type="Input", top=["data"]).input_param.shape.add(dim=[8, 1, 28, 28])
        for layer in net.layer:
            if layer.type not in ("Data", "SoftmaxWithLoss"):
                kept = prototxt.layer.add()
                kept.CopyFrom(layer)
                del kept.blobs[:]
        path = tmp_path / f"{decoded.stem}.prototxt"
        path.write_text(netproto.to_text(prototxt))
        return str(path)

    deployed = encode_decode(tmp_path, fork_file, "--deploy", name="deployed")
    expected = forward(env, LENET_DEPLOY, original, tmp_path / "expected.npz")
    actual = forward(env, own_net(deployed), deployed, tmp_path / "actual.npz")
    assert np.array_equal(actual["fc2"], expected["fc2"])

    # Without --deploy the net keeps the fork's layers and fields: only a Caffe with Cmp layers builds it
    # (this one has cmpstore's, which would prune and share the weights again as they load).
    kept_cmp = encode_decode(tmp_path, fork_file, name="kept_cmp")
    kept = netproto.parse_skeleton(api.load_model(kept_cmp).skeleton)
    assert [layer.type for layer in kept.layer if layer.blobs] == ["CmpConvolution"] * 2 + ["CmpInnerProduct"] * 2
    assert all(layer.inner_product_param.quantize_term for layer in kept.layer if layer.type == "CmpInnerProduct")

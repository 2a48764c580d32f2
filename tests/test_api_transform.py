"""prune, quantize and compress in the library: settings from a prototxt, overridden by name; decode into a stream."""

import io

import numpy as np
import pytest

import cmpstore
from cmpstore import api
from cmpstore.caffe import netproto
from cmpstore.caffe.caffemodel import caffemodel_bytes
from cmpstore.errors import UsageError
from cmpstore.synthetic import build_model


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "lenet.caffemodel"
    api.save_model(build_model(seed=0), path)
    return path


@pytest.fixture
def cmp_prototxt(tmp_path):
    """The net with fc1 a Cmp layer: sparse_ratio 0.75, class_num 4, quantize_term set."""
    net = build_model(seed=0).net
    for layer in net.layer:
        del layer.blobs[:]
        if layer.name == "fc1":
            layer.type = "CmpInnerProduct"
            layer.inner_product_param.sparse_ratio = 0.75
            layer.inner_product_param.class_num = 4
            layer.inner_product_param.quantize_term = True
    path = tmp_path / "cmp.prototxt"
    path.write_text(netproto.to_text(net))
    return path


def kept(outcomes, name):
    return next(outcome for outcome in outcomes if outcome.name == name)


def test_prune_takes_the_prototxts_ratios_and_a_named_layer_overrides_them(model_file, cmp_prototxt, tmp_path):
    pruned, outcomes = cmpstore.prune(model_file, tmp_path / "p.caffemodel", from_prototxt=cmp_prototxt)
    assert [(outcome.name, outcome.ratio, outcome.centroids) for outcome in outcomes] == [("fc1", 0.75, None)]
    assert caffemodel_bytes(api.load_model(tmp_path / "p.caffemodel")) == caffemodel_bytes(pruned)
    _, outcomes = cmpstore.prune(model_file, from_prototxt=cmp_prototxt, ratios={"fc1": 0.5, "conv": 0.3})
    assert sorted(outcome.name for outcome in outcomes) == ["conv1", "conv2", "fc1"]
    assert (kept(outcomes, "fc1").ratio, kept(outcomes, "conv1").ratio) == (0.5, 0.3)


def test_quantize_takes_the_prototxts_clusters_only(model_file, cmp_prototxt):
    shared, outcomes = cmpstore.quantize(model_file, from_prototxt=cmp_prototxt)
    assert [(outcome.name, outcome.centroids) for outcome in outcomes] == [("fc1", 4)]
    assert np.unique(shared.weights_by_layer()["fc1"][0]).size == 5  # the 4 shared values and the pruned zeros


def test_nothing_to_do_names_what_each_function_takes(model_file):
    with pytest.raises(UsageError, match="nothing to do: give ratios or from_prototxt"):
        cmpstore.prune(model_file)
    with pytest.raises(UsageError, match="nothing to do: give clusters or from_prototxt"):
        cmpstore.quantize(model_file)
    with pytest.raises(UsageError, match="nothing to do: give ratios, clusters or from_prototxt"):
        cmpstore.compress(model_file)


def test_prune_never_writes_over_its_inputs(model_file, cmp_prototxt):
    before = cmp_prototxt.read_bytes()
    with pytest.raises(UsageError, match="input"):
        cmpstore.prune(model_file, cmp_prototxt, from_prototxt=cmp_prototxt, force=True)
    assert cmp_prototxt.read_bytes() == before


def test_decode_into_a_stream_gives_the_binary_caffemodel(model_file, tmp_path):
    encoded = tmp_path / "lenet.cmps"
    api.encode(model_file, encoded)
    stream = io.BytesIO()
    assert cmpstore.decode(encoded, stream) is None
    assert stream.getvalue() == model_file.read_bytes()
    with pytest.raises(UsageError, match="format npz needs a seekable file"):
        cmpstore.decode(encoded, io.BytesIO(), format="npz")
    with pytest.raises(UsageError, match="sparse=True needs an .npz file"):
        cmpstore.decode(encoded, io.BytesIO(), sparse=True)

"""decode(encode(m)) == m, bit for bit, for every kind of model cmpstore reads."""

import h5py
import numpy as np
import pytest
from common import assert_bit_identical, shared_model
from nets import layer_net_bytes, legacy_net_bytes, lenet_like_bytes

from cmpstore import api
from cmpstore.caffe.caffemodel import caffemodel_bytes, split_caffemodel
from cmpstore.caffe.model import SourceFormat

MODELS = {
    "lenet-like": lenet_like_bytes,
    "layer-zoo": layer_net_bytes,
    "legacy-v1": legacy_net_bytes,
    "legacy-double": lambda: legacy_net_bytes(double=True),
}


@pytest.mark.parametrize("make", MODELS.values(), ids=MODELS.keys())
def test_caffemodel_roundtrip_is_byte_identical(make, tmp_path):
    data = make()
    source = tmp_path / "model.caffemodel"
    source.write_bytes(data)
    assert api.encode(source, tmp_path / "model.cmps") is None
    encoded = (tmp_path / "model.cmps").read_bytes()
    assert api.decode(tmp_path / "model.cmps", tmp_path / "back.caffemodel") is None
    assert (tmp_path / "back.caffemodel").read_bytes() == data
    assert caffemodel_bytes(api.decode(tmp_path / "model.cmps")) == data
    assert len(encoded) < len(data)
    assert api.verify(source, tmp_path / "model.cmps") == []


@pytest.mark.parametrize("name", ["lenet_pq_seed_schedule.caffemodel", "lenet_iter_10000.caffemodel"])
def test_shared_lenet_roundtrip(name, tmp_path):
    source = shared_model(name)
    api.encode(source, tmp_path / "m.cmps")
    api.decode(tmp_path / "m.cmps", tmp_path / "m.caffemodel")
    assert (tmp_path / "m.caffemodel").read_bytes() == source.read_bytes()


def test_dense_model_roundtrips_and_says_why(tmp_path):
    source = shared_model("lenet_iter_10000.caffemodel")
    from cmpstore.cmps.reader import open_cmps
    from cmpstore.report import build_report

    report = build_report(open_cmps(api.encode(source)), str(source))
    notes = [note for row in report.layers for note in row.notes]
    assert any("fc1" == row.name and row.notes for row in report.layers), notes


def write_caffe_hdf5(path, weights: dict[str, list[np.ndarray]]):
    with h5py.File(path, "w") as h5:
        data = h5.create_group("data")
        for name, blobs in weights.items():
            group = data.create_group(name)
            for index, blob in enumerate(blobs):
                group.create_dataset(str(index), data=blob)


def test_hdf5_roundtrip(tmp_path):
    original = api.weights_by_layer(split_caffemodel(layer_net_bytes()))
    original["double"] = [np.linspace(-1, 1, 12).reshape(3, 4)]
    original["empty"] = []
    write_caffe_hdf5(tmp_path / "m.caffemodel.h5", original)
    api.encode(tmp_path / "m.caffemodel.h5", tmp_path / "m.cmps")
    api.decode(tmp_path / "m.cmps", tmp_path / "back.caffemodel.h5", format="h5")
    assert api.decode(tmp_path / "m.cmps").source_format == SourceFormat.HDF5
    back = api.load_weights(tmp_path / "back.caffemodel.h5")
    assert set(back) == {name for name, blobs in original.items() if blobs}
    for name, blobs in back.items():
        for actual, expected in zip(blobs, original[name], strict=True):
            assert_bit_identical(actual, np.asarray(expected, dtype=expected.dtype.newbyteorder("<")))
    with h5py.File(tmp_path / "back.caffemodel.h5") as h5:
        assert "empty" in h5["data"]
    assert api.verify(tmp_path / "m.caffemodel.h5", tmp_path / "back.caffemodel.h5") == []


def test_caffemodel_to_hdf5_and_back(tmp_path):
    source = tmp_path / "m.caffemodel"
    source.write_bytes(layer_net_bytes())
    api.encode(source, tmp_path / "m.cmps")
    api.decode(tmp_path / "m.cmps", tmp_path / "m.h5", format="h5")
    assert api.verify(source, tmp_path / "m.h5") == []


def test_deploy_turns_cmp_layers_into_stock_ones(tmp_path):
    source = tmp_path / "m.caffemodel"
    source.write_bytes(layer_net_bytes())
    api.encode(source, tmp_path / "m.cmps")
    api.decode(tmp_path / "m.cmps", tmp_path / "deploy.caffemodel", deploy=True)
    model = api.decode(tmp_path / "m.cmps", deploy=True)
    from cmpstore.caffe import netproto

    net = netproto.parse_skeleton(model.skeleton)
    ip = [layer for layer in net.layer if layer.name == "ip_t"][0]
    assert ip.type == "InnerProduct"
    assert not ip.inner_product_param.HasField("sparse_ratio")
    assert not ip.inner_product_param.HasField("class_num")
    assert not ip.inner_product_param.HasField("quantize_term")
    assert ip.inner_product_param.transpose
    assert api.verify(source, tmp_path / "deploy.caffemodel") == []


def test_encoding_is_deterministic():
    model = split_caffemodel(layer_net_bytes())
    assert api.encode(model) == api.encode(split_caffemodel(layer_net_bytes()))

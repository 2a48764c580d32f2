"""FLOAT16 blobs (OpenCV's and NVIDIA Caffe's ``raw_data``): float16 payloads from the caffemodel to every output."""

import numpy as np
import pytest
from common import assert_bit_identical, with_version
from nets import float16_net_bytes

from cmpstore import api
from cmpstore.caffe._proto import caffe_pb2
from cmpstore.caffe.caffemodel import caffemodel_bytes
from cmpstore.caffe.model import Model
from cmpstore.cmps import container
from cmpstore.cmps.writer import encode_model
from cmpstore.errors import FormatError, ModelError, UsageError
from cmpstore.synthetic import build_model


@pytest.fixture
def float16_model(tmp_path):
    path = tmp_path / "fp16.caffemodel"
    path.write_bytes(float16_net_bytes())
    return path


def expected_weights() -> dict[str, list[np.ndarray]]:
    net = caffe_pb2.NetParameter.FromString(float16_net_bytes())
    conv, bn, ip = net.layer[1], net.layer[2], net.layer[3]
    return {
        "conv": [np.frombuffer(blob.raw_data, "<f2").reshape(blob.shape.dim) for blob in conv.blobs],
        "bn": [np.array(blob.data, "<f4").reshape(blob.shape.dim) for blob in bn.blobs],
        # NVIDIA Caffe's FLOAT raw_data: float32 values.
        "ip": [np.frombuffer(ip.blobs[0].raw_data, "<f2").reshape(10, 288), np.frombuffer(ip.blobs[1].raw_data, "<f4")],
    }


def test_load_weights_gives_float16_arrays_unconverted(float16_model):
    weights = api.load_weights(float16_model)
    expected = expected_weights()
    assert sorted(weights) == sorted(expected)
    for name, blobs in expected.items():
        for actual, wanted in zip(weights[name], blobs, strict=True):
            assert_bit_identical(actual, wanted)


def test_npz_holds_float16_arrays(float16_model, tmp_path):
    model = api.load_model(float16_model)
    api.save_model(model, tmp_path / "w.npz")
    with np.load(tmp_path / "w.npz") as arrays:
        assert arrays["conv/0"].dtype == np.dtype("<f2") and arrays["conv/0"].shape == (8, 3, 3, 3)
        assert_bit_identical(arrays["ip/0"], expected_weights()["ip"][0])


def test_hdf5_output_is_refused_naming_the_blob(float16_model, tmp_path):
    model = api.load_model(float16_model)
    with pytest.raises(
        UsageError,
        match=r"w.h5: layer 'conv' blob 0: holds float16 values \(FLOAT16 raw_data\), and Caffe's HDF5 weights are "
        r"float32 or float64; write a .caffemodel or .npz instead",
    ):
        api.save_model(model, tmp_path / "w.h5")
    assert not (tmp_path / "w.h5").exists()


def test_encode_decode_is_byte_identical_and_writes_format_version_2(tmp_path):
    float16_model = tmp_path / "fp16.caffemodel"
    float16_model.write_bytes(float16_net_bytes(float_raw_data=False))
    api.encode(float16_model, tmp_path / "fp16.cmps")
    encoded = (tmp_path / "fp16.cmps").read_bytes()
    assert container.read_version(encoded) == (2, 7)  # NETP and six blobs
    info = api.inspect(tmp_path / "fp16.cmps")
    assert info["version"] == 2
    assert [(s["layer"], s["blob"]) for s in info["sections"][1:] if s["dtype"] == "float16"] == [
        ("conv", 0),
        ("conv", 1),
        ("ip", 0),
    ]
    assert caffemodel_bytes(api.decode(tmp_path / "fp16.cmps")) == float16_model.read_bytes()
    api.decode(tmp_path / "fp16.cmps", tmp_path / "streamed.caffemodel")
    assert (tmp_path / "streamed.caffemodel").read_bytes() == float16_model.read_bytes()
    assert api.verify(float16_model, tmp_path / "fp16.cmps") == []


def test_a_model_without_float16_blobs_stays_format_version_1_below_codec_4():
    # Unheld, its dense biases take codec 4 (format version 3); float16 alone never makes it version 2.
    assert container.read_version(api.encode(build_model(seed=0), max_version=2))[0] == 1


def test_compress_prunes_and_shares_float16_weights(float16_model):
    encoded, outcomes = api.compress(float16_model, ratios={"conv": 0.7, "fc": 0.9}, clusters={"conv": 16, "fc": 4})
    assert [(o.name, o.weights, o.centroids is not None) for o in outcomes] == [("conv", 216, True), ("ip", 2880, True)]
    weights = api.decode_bytes(encoded).weights_by_layer()
    ip = weights["ip"][0]
    assert ip.dtype == np.dtype("<f2")
    assert np.count_nonzero(ip) <= 288 and np.unique(ip[ip != 0]).size <= 4


def test_version_1_file_with_float16_values_is_refused(float16_model):
    encoded = with_version(api.encode(float16_model), 1)
    with pytest.raises(
        FormatError, match=r"x.cmps: section 1 \(BLOB at byte \d+\): value field 12 needs a later format version than 1"
    ):
        api.decode_bytes(encoded, "x.cmps")


def test_float16_values_for_a_blob_that_is_not_float16_are_refused(float16_model):
    model = api.load_model(float16_model)
    net = caffe_pb2.NetParameter.FromString(model.skeleton)
    net.layer[1].blobs[1].raw_data_type = caffe_pb2.FLOAT
    forged = Model(net.SerializeToString(), model.payloads)
    message = r"layer 'conv' blob 1: values are float16 \(<f2\); raw_data \(field 12\) holds <f4"
    with pytest.raises(UsageError, match=message):
        api.encode(forged)


def test_raw_data_values_for_a_blob_of_an_integer_type_are_refused(float16_model, monkeypatch):
    model = api.load_model(float16_model)
    net = caffe_pb2.NetParameter.FromString(model.skeleton)
    net.layer[1].blobs[1].raw_data_type = caffe_pb2.INT
    forged = Model(net.SerializeToString(), model.payloads)
    message = (
        r"layer 'conv' blob 1: holds raw_data values but has raw_data_type 3; "
        r"values come only from FLOAT16, FLOAT or DOUBLE raw_data"
    )
    with pytest.raises(ModelError, match=message):
        api.encode(forged)
    # The same file written past the encoder's check: the reader refuses it as well.
    monkeypatch.setattr(Model, "check", lambda self, *args, **kwargs: self.layers)
    encoded = encode_model(forged)
    with pytest.raises(FormatError, match=rf"x.cmps: section 2 \(BLOB at byte \d+\), {message}"):
        api.decode_bytes(encoded, "x.cmps")

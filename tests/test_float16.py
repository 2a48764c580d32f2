"""FLOAT16 blobs (OpenCV's and NVIDIA Caffe's ``raw_data``): float16 payloads from the caffemodel to every output."""

import numpy as np
import pytest
from common import assert_bit_identical
from nets import float16_net_bytes

from cmpstore import api
from cmpstore.caffe._proto import caffe_pb2
from cmpstore.errors import UsageError


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
        # The FLOAT raw_data blob is not read (cmpstore reads FLOAT16 raw_data only): no values.
        "ip": [np.frombuffer(ip.blobs[0].raw_data, "<f2").reshape(10, 288), np.zeros(0, "<f4")],
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

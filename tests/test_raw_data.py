"""NVIDIA Caffe's FLOAT and DOUBLE ``raw_data`` blobs: values like any other, from the caffemodel to every output.

Before format version 4 they stayed in the skeleton as bytes, where ``verify``
did not compare them and ``.npz`` gave an empty array (red team round 3, A7).
"""

import h5py
import numpy as np
import pytest
from common import assert_bit_identical, run_cli, with_version

from cmpstore import api
from cmpstore.caffe._proto import caffe_pb2
from cmpstore.caffe.caffemodel import caffemodel_bytes, split_caffemodel
from cmpstore.caffe.model import RAW_DATA_FIELD, Model
from cmpstore.cmps import container
from cmpstore.cmps.writer import encode_model
from cmpstore.errors import FormatError, ModelError
from cmpstore.synthetic import pruned_quantized


def raw_net_bytes(seed: int = 0) -> bytes:
    """An InnerProduct whose pruned, shared weights are FLOAT raw_data and whose bias is DOUBLE raw_data."""
    rng = np.random.default_rng(seed)
    net = caffe_pb2.NetParameter(name="nvcaffe")
    net.layer.add(name="data", type="Input", top=["data"]).input_param.shape.add(dim=[1, 60])
    fc = net.layer.add(name="fc", type="InnerProduct", bottom=["data"], top=["fc"])
    fc.inner_product_param.num_output = 40
    weights = pruned_quantized((40, 60), 0.1, 8, rng).astype("<f4")
    fc.blobs.add(raw_data_type=caffe_pb2.FLOAT, raw_data=weights.tobytes()).shape.dim.extend([40, 60])
    bias = rng.normal(size=40).astype("<f8")
    fc.blobs.add(raw_data_type=caffe_pb2.DOUBLE, raw_data=bias.tobytes()).shape.dim.append(40)
    return net.SerializeToString()


def raw_arrays(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    fc = caffe_pb2.NetParameter.FromString(data).layer[1]
    return np.frombuffer(fc.blobs[0].raw_data, "<f4").reshape(40, 60), np.frombuffer(fc.blobs[1].raw_data, "<f8")


@pytest.fixture
def raw_model(tmp_path):
    path = tmp_path / "nvcaffe.caffemodel"
    path.write_bytes(raw_net_bytes())
    return path


def as_version_2_wrote_it(model_path) -> bytes:
    """The .cmps file cmpstore wrote before version 4: FLOAT/DOUBLE raw_data left in the skeleton as bytes."""
    source = (model_path).read_bytes()
    model = split_caffemodel(source)
    skeleton_model = Model(caffemodel_bytes(model), [])  # the raw_data back in, as the skeleton held it
    net = caffe_pb2.NetParameter.FromString(skeleton_model.skeleton)
    assert net.layer[1].blobs[0].raw_data  # the values really are in this skeleton
    checked = Model.check
    try:
        Model.check = lambda self, *args, **kwargs: self.layers
        return encode_model(skeleton_model, max_version=3)
    finally:
        Model.check = checked


def test_float_and_double_raw_data_are_values_of_their_own_dtype(raw_model):
    weights = api.load_weights(raw_model)
    expected_weights, expected_bias = raw_arrays(raw_model.read_bytes())
    assert_bit_identical(weights["fc"][0], expected_weights)
    assert_bit_identical(weights["fc"][1], expected_bias)
    model = api.load_model(raw_model)
    assert [(p.address.value_field, p.values.dtype.str) for p in model.payloads] == [
        (RAW_DATA_FIELD, "<f4"),
        (RAW_DATA_FIELD, "<f8"),
    ]
    assert not any(blob.raw_data for blob in caffe_pb2.NetParameter.FromString(model.skeleton).layer[1].blobs)


def test_encode_decode_is_byte_identical_in_format_version_4(raw_model, tmp_path):
    api.encode(raw_model, tmp_path / "m.cmps")
    encoded = (tmp_path / "m.cmps").read_bytes()
    assert container.read_version(encoded)[0] == 4
    info = api.inspect(tmp_path / "m.cmps")
    assert [s["dtype"] for s in info["sections"][1:]] == ["float32", "float64"]
    assert info["sections"][1]["codec"] == "sparse"  # pruned and shared: coded as the paper codes weights
    assert caffemodel_bytes(api.decode(tmp_path / "m.cmps")) == raw_model.read_bytes()
    api.decode(tmp_path / "m.cmps", tmp_path / "streamed.caffemodel")
    assert (tmp_path / "streamed.caffemodel").read_bytes() == raw_model.read_bytes()
    assert api.verify(raw_model, tmp_path / "m.cmps") == []


def test_an_earlier_format_version_is_refused_by_the_encoder_and_the_reader(raw_model):
    with pytest.raises(ModelError, match="holds FLOAT raw_data blobs, which need format version 4, not 3"):
        api.encode(raw_model, max_version=3)
    with pytest.raises(FormatError, match=r"x.cmps: section 1 \(BLOB at byte \d+\): value field 12 needs a later"):
        api.decode_bytes(with_version(api.encode(raw_model), 3), "x.cmps")


def test_verify_sees_different_raw_values(tmp_path):
    first, second = tmp_path / "a.caffemodel", tmp_path / "b.caffemodel"
    first.write_bytes(raw_net_bytes(seed=0))
    second.write_bytes(raw_net_bytes(seed=1))
    assert len(first.read_bytes()) == len(second.read_bytes())
    problems = api.verify(first, second)
    assert [problem.split(":")[0] for problem in problems] == [
        "layer 'fc' blob 0 raw_data",
        "layer 'fc' blob 1 raw_data",
    ]
    status, _, _ = run_cli("verify", first, second)
    assert status == 1


def test_npz_and_hdf5_hold_the_values(raw_model, tmp_path):
    expected_weights, expected_bias = raw_arrays(raw_model.read_bytes())
    model = api.load_model(raw_model)
    api.save_model(model, tmp_path / "w.npz")
    with np.load(tmp_path / "w.npz") as arrays:
        assert_bit_identical(arrays["fc/0"], expected_weights)
        assert_bit_identical(arrays["fc/1"], expected_bias)
    api.save_model(model, tmp_path / "w.h5")
    with h5py.File(tmp_path / "w.h5", "r") as h5:
        assert_bit_identical(h5["data/fc/0"][()], expected_weights)
        assert_bit_identical(h5["data/fc/1"][()], expected_bias)


def test_a_file_written_before_version_4_still_decodes_and_its_values_are_seen(raw_model, tmp_path):
    old = tmp_path / "old.cmps"
    old.write_bytes(as_version_2_wrote_it(raw_model))
    assert container.read_version(old.read_bytes())[0] == 1  # nothing else in it needs a later version
    api.decode(old, tmp_path / "streamed.caffemodel")
    assert (tmp_path / "streamed.caffemodel").read_bytes() == raw_model.read_bytes()
    assert caffemodel_bytes(api.decode(old)) == raw_model.read_bytes()
    assert api.verify(raw_model, old) == []
    other = tmp_path / "other.caffemodel"
    other.write_bytes(raw_net_bytes(seed=1))
    assert len(api.verify(other, old)) == 2
    assert_bit_identical(api.load_weights(old)["fc"][0], raw_arrays(raw_model.read_bytes())[0])
    # Re-encoded, it becomes a version 4 file with the values as BLOB sections.
    assert container.read_version(api.encode(old))[0] == 4


def test_a_version_4_skeleton_still_holding_float_raw_data_is_refused(raw_model):
    old = as_version_2_wrote_it(raw_model)
    with pytest.raises(FormatError, match=r"layer 'fc' blob 0: the skeleton still holds 9,600 raw_data bytes"):
        api.decode_bytes(with_version(old, 4), "x.cmps")

import hashlib

import numpy as np
import pytest
from common import assert_bit_identical, shared_model
from nets import float16_net_bytes, layer_net_bytes, legacy_net_bytes, lenet_like_bytes, unpack_floats

from cmpstore import api
from cmpstore.caffe import wire
from cmpstore.caffe._proto import caffe_pb2
from cmpstore.caffe.caffemodel import caffemodel_bytes, caffemodel_size, join_caffemodel, split_caffemodel
from cmpstore.caffe.model import (
    DOUBLE_DATA_FIELD,
    LEGACY_LAYER_FIELD,
    RAW_DATA_FIELD,
    RAW_DATA_TYPE_FIELD,
    RAW_DATA_TYPE_FLOAT16,
)
from cmpstore.errors import ModelError


def protobuf_values(data: bytes) -> list[np.ndarray]:
    """Every blob's values as protobuf itself reads them: the reference for the wire walker."""
    net = caffe_pb2.NetParameter.FromString(data)
    arrays = []
    for layer in list(net.layer) + list(net.layers):
        for blob in layer.blobs:
            if len(blob.data):
                arrays.append(np.array(blob.data, dtype="<f4"))
            if len(blob.double_data):
                arrays.append(np.array(blob.double_data, dtype="<f8"))
            raw_dtype = {caffe_pb2.FLOAT16: "<f2", caffe_pb2.FLOAT: "<f4", caffe_pb2.DOUBLE: "<f8"}
            if blob.HasField("raw_data_type") and blob.raw_data_type in raw_dtype and blob.HasField("raw_data"):
                arrays.append(np.frombuffer(blob.raw_data, dtype=raw_dtype[blob.raw_data_type]))
    return arrays


@pytest.mark.parametrize(
    "data",
    [lenet_like_bytes(), layer_net_bytes(), legacy_net_bytes(), legacy_net_bytes(double=True), float16_net_bytes()],
    ids=["lenet-like", "layer-zoo", "legacy-v1", "legacy-double", "float16-raw-data"],
)
def test_split_join_is_byte_identical(data):
    model = split_caffemodel(data)
    assert caffemodel_bytes(model) == data
    sizes = {p.address: p.values.nbytes for p in model.payloads}
    assert caffemodel_size(model.skeleton, sizes) == len(data)
    for payload, expected in zip(model.payloads, protobuf_values(data), strict=True):
        assert_bit_identical(payload.values, expected)


def test_payloads_are_zero_copy_views():
    data = lenet_like_bytes()
    model = split_caffemodel(data)
    assert all(payload.values.base is not None for payload in model.payloads)


def test_unpacked_fields_read_and_come_back_packed():
    packed = legacy_net_bytes(unpacked=False)
    unpacked = unpack_floats(packed)
    assert unpacked != packed and len(unpacked) > len(packed)
    model = split_caffemodel(unpacked)
    for payload, expected in zip(model.payloads, protobuf_values(unpacked), strict=True):
        assert_bit_identical(payload.values, expected)
    assert caffemodel_bytes(model) == packed


def test_double_data_payloads_are_float64():
    model = split_caffemodel(legacy_net_bytes(double=True))
    weights = [p for p in model.payloads if p.address.value_field == DOUBLE_DATA_FIELD]
    assert weights and all(p.values.dtype == np.dtype("<f8") for p in weights)
    assert all(p.address.layer_field == LEGACY_LAYER_FIELD for p in model.payloads)


def test_float16_raw_data_becomes_a_float16_payload_and_leaves_the_skeleton():
    model = split_caffemodel(float16_net_bytes())
    float16 = [p for p in model.payloads if p.address.value_field == RAW_DATA_FIELD]
    assert [(p.address.layer_index, p.address.blob_index, p.values.dtype.str) for p in float16] == [
        (1, 0, "<f2"),
        (1, 1, "<f2"),
        (3, 0, "<f2"),
        (3, 1, "<f4"),  # NVIDIA Caffe's FLOAT raw_data: float32 values
    ]
    skeleton = caffe_pb2.NetParameter.FromString(model.skeleton)
    assert [blob.HasField("raw_data") for blob in skeleton.layer[1].blobs] == [False, False]
    assert [blob.HasField("raw_data") for blob in skeleton.layer[3].blobs] == [False, False]
    assert skeleton.layer[1].blobs[0].raw_data_type == caffe_pb2.FLOAT16


def test_float16_raw_data_before_its_type_is_still_taken_out():
    blob = caffe_pb2.BlobProto(raw_data=np.array([1.0, 0.0, -2.0], dtype="<f2").tobytes())
    blob.shape.dim.append(3)
    type_field = wire.encode_tag(RAW_DATA_TYPE_FIELD, wire.VARINT) + bytes([RAW_DATA_TYPE_FLOAT16])
    model = split_caffemodel(_one_blob_net(blob.SerializeToString() + type_field))
    assert model.payloads[0].values.tolist() == [1.0, 0.0, -2.0]


def test_repeated_float16_raw_data_is_refused():
    blob = caffe_pb2.BlobProto(raw_data_type=caffe_pb2.FLOAT16, raw_data=b"\x00\x3c")
    blob.shape.dim.append(1)
    raw = wire.length_delimited(RAW_DATA_FIELD, 2) + b"\x00\x3c"
    with pytest.raises(
        ModelError, match=r"m.caffemodel: layer\[0\] blob 0: FLOAT16 raw_data \(field 12\) appears 2 times"
    ):
        split_caffemodel(_one_blob_net(blob.SerializeToString() + raw), "m.caffemodel")


def test_float16_raw_data_of_an_odd_length_is_refused():
    blob = caffe_pb2.BlobProto(raw_data_type=caffe_pb2.FLOAT16, raw_data=b"\x00\x3c\x00")
    with pytest.raises(
        ModelError, match=r"layer\[0\] blob 0: field 12 holds 3 bytes, not a whole number of 2-byte values"
    ):
        split_caffemodel(_one_blob_net(blob.SerializeToString()), "m.caffemodel")


def _one_blob_net(blob: bytes) -> bytes:
    layer = caffe_pb2.LayerParameter(name="w", type="Scale").SerializeToString()
    layer += wire.length_delimited(7, len(blob)) + blob
    return wire.length_delimited(100, len(layer)) + layer


def test_unknown_fields_survive():
    net = caffe_pb2.NetParameter.FromString(lenet_like_bytes())
    extra = b"\xf8\x3e\x2a"  # field 999, varint 42: unknown to Caffe
    data = net.SerializeToString() + extra
    assert caffemodel_bytes(split_caffemodel(data)) == data


def test_chunks_write_without_joining(tmp_path):
    model = split_caffemodel(lenet_like_bytes())
    chunks = join_caffemodel(model)
    assert any(isinstance(chunk, np.ndarray) for chunk in chunks)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "not a valid binary caffemodel"),
        (lenet_like_bytes()[:-1000], "not a valid binary caffemodel"),
        (caffe_pb2.NetParameter(name="empty").SerializeToString(), "no layers found"),
    ],
    ids=["jpeg", "truncated", "empty-net"],
)
def test_malformed_caffemodels(data, message):
    with pytest.raises(ModelError, match=message):
        split_caffemodel(data, "model.caffemodel")


def test_shape_mismatch_is_reported(tmp_path):
    net = caffe_pb2.NetParameter.FromString(lenet_like_bytes())
    net.layer[1].blobs[0].shape.dim[0] = 21
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(net.SerializeToString())
    with pytest.raises(ModelError, match=r"layer 'conv1' blob 0: blob holds 500 values but its shape \[21, 1, 5, 5\]"):
        api.load_model(path)


@pytest.mark.parametrize("name", ["lenet_pq_seed_schedule.caffemodel", "lenet_iter_10000.caffemodel"])
def test_caffe_written_models_come_back_byte_identical(name):
    data = shared_model(name).read_bytes()
    assert hashlib.sha256(caffemodel_bytes(split_caffemodel(data))).digest() == hashlib.sha256(data).digest()

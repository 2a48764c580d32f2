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


# --- edge cases of the wire that once crashed a reader or lost bytes -----------------------------------


def net_with_layer(layer_bytes: bytes) -> bytes:
    return (
        caffe_pb2.NetParameter(name="n").SerializeToString()
        + wire.length_delimited(100, len(layer_bytes))
        + layer_bytes
    )


def blob_bytes(shape, values=None, before=b"") -> bytes:
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(shape)
    if values is not None:
        blob.data.extend(values)
    return before + blob.SerializeToString()


def layer_with_blobs(*blobs: bytes, extra: bytes = b"") -> bytes:
    layer = caffe_pb2.LayerParameter(name="conv", type="Convolution").SerializeToString() + extra
    return layer + b"".join(wire.length_delimited(7, len(blob)) + blob for blob in blobs)


def roundtrip(tmp_path, raw: bytes) -> None:
    """Encode, then decode streaming and in memory: the same bytes each way; report and verify agree."""
    (tmp_path / "m.caffemodel").write_bytes(raw)
    api.encode(tmp_path / "m.caffemodel", tmp_path / "m.cmps")
    api.decode(tmp_path / "m.cmps", tmp_path / "streamed.caffemodel")
    assert (tmp_path / "streamed.caffemodel").read_bytes() == raw
    api.save_model(api.decode(tmp_path / "m.cmps"), tmp_path / "in_memory.caffemodel")
    assert (tmp_path / "in_memory.caffemodel").read_bytes() == raw
    assert api.report(tmp_path / "m.cmps").total_before == len(raw)
    assert api.verify(tmp_path / "m.caffemodel", tmp_path / "m.cmps") == []


def test_a_blob_with_an_empty_packed_data_field_roundtrips(tmp_path):
    """Once a KeyError in the streaming writer, and the empty field was dropped in memory."""
    empty_packed = bytes([0x2A, 0x00])  # BlobProto.data (5), length-delimited, 0 bytes: before shape (7)
    raw = net_with_layer(layer_with_blobs(blob_bytes([0], before=empty_packed), blob_bytes([3], [1.0, 2.0, 3.0])))
    roundtrip(tmp_path, raw)


def test_a_blob_of_shape_zero_without_data_roundtrips(tmp_path):
    roundtrip(tmp_path, net_with_layer(layer_with_blobs(blob_bytes([0]), blob_bytes([2], [0.5, -1.0]))))


def test_a_group_field_in_a_layer_is_kept_byte_for_byte(tmp_path):
    """Once "internal error ... unsupported wire type 3" in decode and report, while verify passed."""
    group = wire.encode_tag(999, wire.START_GROUP) + wire.encode_tag(1, wire.VARINT) + b"\x07"
    group += wire.encode_tag(2, wire.START_GROUP) + wire.encode_tag(2, wire.END_GROUP)  # a nested, empty group
    group += wire.encode_tag(999, wire.END_GROUP)
    raw = net_with_layer(layer_with_blobs(blob_bytes([4], [0.5, 0.0, 0.0, -2.0]), extra=group))
    caffe_pb2.NetParameter.FromString(raw)  # protobuf accepts it, as an unknown field
    roundtrip(tmp_path, raw)


@pytest.mark.parametrize(
    ("group", "message"),
    [
        (wire.encode_tag(999, wire.START_GROUP), "group 999 at byte"),
        (wire.encode_tag(999, wire.END_GROUP), "end of group 999"),
        (wire.encode_tag(9, wire.START_GROUP) + wire.encode_tag(8, wire.END_GROUP), "end of group 8"),
        (wire.encode_tag(9, wire.START_GROUP) * (wire.MAX_GROUP_DEPTH + 1), "nested more than 100 deep"),
    ],
    ids=["unterminated", "stray end", "mismatched end", "too deep"],
)
def test_broken_groups_are_a_clear_error(tmp_path, group, message):
    (tmp_path / "m.caffemodel").write_bytes(net_with_layer(layer_with_blobs(blob_bytes([1], [1.0]), extra=group)))
    with pytest.raises(Exception) as caught:
        api.load_model(tmp_path / "m.caffemodel")
    assert message in str(caught.value) and "internal error" not in str(caught.value)

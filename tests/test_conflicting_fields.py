"""Fields whose bytes do not parse as caffe.proto declares their number (forks reusing numbers).

CaffeOnSpark writes ``LayerParameter.source_class = 141``, a string, where
caffe.proto has ``bias_param = 141``, a BiasParameter: protobuf then refuses the
whole net ("Wire format was corrupt").  These files are built here, no download.
"""

import dataclasses
import struct
import zlib

import numpy as np
import pytest
from common import run_cli
from nets import lenet_like_bytes

from cmpstore import api
from cmpstore.caffe import netproto, wire
from cmpstore.caffe._proto import caffe_pb2
from cmpstore.caffe.caffemodel import caffemodel_bytes
from cmpstore.cmps import container
from cmpstore.errors import FormatError, ModelError
from cmpstore.streams.varint import encode_varint
from cmpstore.synthetic import LENET, build_model

SOURCE_CLASS = b"com.yahoo.ml.caffe.LMDB"  # CaffeOnSpark's value: 'c' opens a group that never ends


def with_layer_field(data: bytes, layer_index: int, extra: bytes) -> bytes:
    """``data`` with ``extra`` (a whole field) appended to its ``layer_index``-th ``layer``."""
    out = bytearray()
    index = 0
    for field in wire.iter_fields(data, 0, len(data)):
        if field.number == 100 and field.wire_type == wire.LENGTH_DELIMITED:
            content = data[field.value_start : field.end] + (extra if index == layer_index else b"")
            out += wire.length_delimited(100, len(content)) + content
            index += 1
        else:
            out += data[field.start : field.end]
    return bytes(out)


def source_class_field() -> bytes:
    return wire.length_delimited(141, len(SOURCE_CLASS)) + SOURCE_CLASS


@pytest.fixture
def caffe_on_spark(tmp_path):
    path = tmp_path / "snapshot.caffemodel"
    path.write_bytes(with_layer_field(lenet_like_bytes(), 0, source_class_field()))
    return path


def test_protobuf_alone_refuses_the_net(caffe_on_spark):
    with pytest.raises(Exception, match="Wire format was corrupt"):
        caffe_pb2.NetParameter.FromString(caffe_on_spark.read_bytes())


def test_the_field_survives_encode_and_decode_byte_for_byte(caffe_on_spark, tmp_path):
    assert api.encode(caffe_on_spark, tmp_path / "snapshot.cmps") is None  # written, not returned
    encoded = (tmp_path / "snapshot.cmps").read_bytes()
    assert caffemodel_bytes(api.decode_bytes(encoded)) == caffe_on_spark.read_bytes()
    api.decode(tmp_path / "snapshot.cmps", tmp_path / "back.caffemodel")
    assert (tmp_path / "back.caffemodel").read_bytes() == caffe_on_spark.read_bytes()
    assert api.verify(caffe_on_spark, tmp_path / "snapshot.cmps") == []


def test_the_parsed_net_leaves_only_that_field_out(caffe_on_spark):
    model = api.load_model(caffe_on_spark)
    assert [layer.name for layer in model.layers] == ["data", "conv1", "conv2", "fc1", "fc2"]
    assert not model.net.layer[0].HasField("bias_param")
    assert netproto.conflicting_fields(model.skeleton) == [
        "layer 'data' (#0) field 141 holds length-delimited bytes that do not parse as caffe.proto's bias_param "
        "(a caffe.BiasParameter)"
    ]


def test_deploy_of_a_net_without_cmp_layers_keeps_the_field(caffe_on_spark, tmp_path):
    """Nothing to make stock: --deploy writes the net as it was, the field included."""
    api.encode(caffe_on_spark, tmp_path / "snapshot.cmps")
    code, _, err = run_cli("decode", tmp_path / "snapshot.cmps", "--deploy", "-o", tmp_path / "deploy.caffemodel")
    assert code == 0, err
    assert (tmp_path / "deploy.caffemodel").read_bytes() == caffe_on_spark.read_bytes()


def test_deploy_refuses_naming_the_layer_and_the_field(tmp_path):
    """With Cmp layers to make stock, the net is rewritten through caffe.proto, which would drop the field."""
    cmp_lenet = tuple(dataclasses.replace(spec, type="Cmp" + spec.type) for spec in LENET)
    source = tmp_path / "cmp.caffemodel"
    source.write_bytes(with_layer_field(caffemodel_bytes(build_model(cmp_lenet)), 0, source_class_field()))
    api.encode(source, tmp_path / "snapshot.cmps")
    code, _, err = run_cli("decode", tmp_path / "snapshot.cmps", "--deploy", "-o", tmp_path / "deploy.caffemodel")
    assert code == 2
    assert err.strip().endswith(
        "snapshot.cmps: layer 'data' (#0) field 141 holds length-delimited bytes that do not parse as caffe.proto's "
        "bias_param (a caffe.BiasParameter); deploy rewrites the net with caffe.proto and would drop it"
    )
    assert not (tmp_path / "deploy.caffemodel").exists()


def test_a_field_of_the_wrong_wire_type_is_an_unknown_field_to_protobuf(tmp_path):
    varint_141 = wire.encode_tag(141, wire.VARINT) + encode_varint(7)
    data = with_layer_field(lenet_like_bytes(), 1, varint_141)
    assert netproto.conflicting_fields(data) == []
    assert caffemodel_bytes(api.decode_bytes(api.encode(_model(data, tmp_path)))) == data


def test_a_net_field_that_does_not_parse_survives(tmp_path):
    data = lenet_like_bytes() + wire.length_delimited(6, len(SOURCE_CLASS)) + SOURCE_CLASS  # NetParameter.state
    model = _model(data, tmp_path)
    assert netproto.conflicting_fields(model.skeleton) == [
        "net field 6 holds length-delimited bytes that do not parse as caffe.proto's state (a caffe.NetState)"
    ]
    assert caffemodel_bytes(api.decode_bytes(api.encode(model))) == data


def test_a_blob_field_that_does_not_parse_is_named(tmp_path):
    blob = caffe_pb2.BlobProto(data=np.ones(2, dtype=np.float32).tolist()).SerializeToString()
    blob += wire.length_delimited(7, len(SOURCE_CLASS)) + SOURCE_CLASS  # BlobProto.shape
    layer = caffe_pb2.LayerParameter(name="scale", type="Scale").SerializeToString()
    layer += wire.length_delimited(7, len(blob)) + blob
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(wire.length_delimited(100, len(layer)) + layer)
    with pytest.raises(
        ModelError,
        match=r"bad.caffemodel: layer 'scale' \(#0\) blob 0: field 7 holds length-delimited bytes that do not parse "
        r"as caffe.proto's shape \(a caffe.BlobShape\); cmpstore reads every blob with caffe.proto",
    ):
        api.load_model(path)


def _model(data: bytes, tmp_path):
    path = tmp_path / "m.caffemodel"
    path.write_bytes(data)
    return api.load_model(path)


def test_such_a_skeleton_makes_a_format_version_2_file(caffe_on_spark):
    # Held to version 2: unheld, its dense weights take codec 4 and make it version 3.
    assert container.read_version(api.encode(caffe_on_spark, max_version=2))[0] == 2
    with pytest.raises(ModelError, match="fields that do not parse as caffe.proto declares them, which need format"):
        api.encode(caffe_on_spark, max_version=1)


def test_a_version_1_file_with_such_a_skeleton_is_refused(caffe_on_spark):
    data = bytearray(api.encode(caffe_on_spark, max_version=2))
    struct.pack_into("<I", data, 8, 1)
    struct.pack_into("<I", data, 16, zlib.crc32(bytes(data[:16])))
    with pytest.raises(
        FormatError,
        match=r"x.cmps: section 0 \(NETP at byte 20\): layer 'data' \(#0\) field 141 holds length-delimited bytes "
        r"that do not parse as caffe.proto's bias_param \(a caffe.BiasParameter\), which needs a later format "
        r"version than 1",
    ):
        api.decode_bytes(bytes(data), "x.cmps")

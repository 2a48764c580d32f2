import hashlib
import importlib.util
import pathlib
import subprocess
import sys

import pytest

from cmpstore.caffe._proto import caffe_pb2

ROOT = pathlib.Path(__file__).resolve().parent.parent
GENERATED = ROOT / "cmpstore" / "caffe" / "_proto" / "caffe_pb2.py"


def test_generated_module_matches_the_schema_digest():
    digest = hashlib.sha256((ROOT / "proto" / "caffe.proto").read_bytes()).hexdigest()
    assert GENERATED.read_text().splitlines()[0].endswith(f"sha256:{digest}"), (
        "proto/caffe.proto changed: run python tools/generate_proto.py"
    )


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="needs grpcio-tools (the dev extra)")
def test_generated_module_is_what_protoc_writes_now():
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "generate_proto.py"), "--check"], capture_output=True)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


@pytest.mark.parametrize(
    "message, field, number, default",
    [
        ("ConvolutionParameter", "sparse_ratio", 19, 0.0),
        ("ConvolutionParameter", "class_num", 20, 256),
        ("ConvolutionParameter", "quantize_term", 21, False),
        ("InnerProductParameter", "sparse_ratio", 7, 0.0),
        ("InnerProductParameter", "class_num", 8, 32),
        ("InnerProductParameter", "quantize_term", 9, False),
    ],
)
def test_deep_compression_fields(message, field, number, default):
    descriptor = getattr(caffe_pb2, message).DESCRIPTOR.fields_by_name[field]
    assert descriptor.number == number
    assert descriptor.default_value == default


def test_blob_fields_are_packed_as_caffe_writes_them():
    fields = caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name
    for name, number in (("data", 5), ("diff", 6), ("double_data", 8), ("double_diff", 9)):
        assert fields[name].number == number
        assert fields[name].is_packed


def test_private_descriptor_pool_leaves_the_default_pool_alone():
    from google.protobuf import descriptor_pool

    with pytest.raises(KeyError):
        descriptor_pool.Default().FindMessageTypeByName("caffe.NetParameter")


def test_raw_data_fields_are_opencvs():
    from cmpstore.caffe.model import RAW_DATA_FIELD, RAW_DATA_TYPE_FIELD, RAW_DATA_TYPE_FLOAT16

    fields = caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name
    assert fields["raw_data_type"].number == RAW_DATA_TYPE_FIELD
    assert fields["raw_data"].number == RAW_DATA_FIELD
    assert caffe_pb2.FLOAT16 == RAW_DATA_TYPE_FLOAT16
    assert [(value.name, value.number) for value in caffe_pb2.Type.DESCRIPTOR.values] == [
        ("DOUBLE", 0),
        ("FLOAT", 1),
        ("FLOAT16", 2),
        ("INT", 3),
        ("UINT", 4),
    ]

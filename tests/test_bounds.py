"""The limits of cmpstore.limits: the writer refuses what the reader rejects, and both check before any work."""

import tracemalloc
import zlib

import numpy as np
import pytest
from common import framed, run_cli
from nets import lenet_like_bytes

from cmpstore import api, limits
from cmpstore.caffe import wire
from cmpstore.caffe._proto import caffe_pb2
from cmpstore.caffe.caffemodel import split_caffemodel
from cmpstore.caffe.model import DATA_FIELD, LAYER_FIELD, BlobAddress, Model, Payload
from cmpstore.cmps.reader import open_cmps
from cmpstore.errors import FormatError, ModelError, UsageError
from cmpstore.streams.varint import encode_varint

LENET = api.encode(split_caffemodel(lenet_like_bytes()))


def net_with_blobs(*shapes: tuple[int, ...]) -> bytes:
    """A skeleton with one layer ``big0``, ``big1``, ... per shape, each with one blob of that shape."""
    net = caffe_pb2.NetParameter(name="hostile")
    for index, shape in enumerate(shapes):
        net.layer.add(name=f"big{index}", type="InnerProduct").blobs.add().shape.dim.extend(shape)
    return net.SerializeToString()


def net_section(skeleton: bytes) -> tuple[bytes, bytes]:
    return b"NETP", encode_varint(1) + encode_varint(len(skeleton)) + zlib.compress(skeleton, 9)


def zero_blob_section(layer_index: int, count: int) -> tuple[bytes, bytes]:
    """A BLOB section of ``count`` float32 zeros in four bytes of codec payload (sparse, no entries)."""
    head = (LAYER_FIELD, layer_index, 0, DATA_FIELD, 2, count)
    return b"BLOB", b"".join(encode_varint(value) for value in (*head, 1, 0, 0, 0))


def zeros_file(*counts: int) -> bytes:
    """A small, valid .cmps file whose blobs decode to ``counts`` float32 zeros each."""
    sections = [net_section(net_with_blobs(*((count,) for count in counts)))]
    sections += [zero_blob_section(index, count) for index, count in enumerate(counts)]
    return framed(sections)


def sparse_array(tmp_path, count: int, name: str = "values.f4") -> np.ndarray:
    """``count`` float32 zeros backed by a sparse file: gigabytes of values that cost no memory or disk."""
    return np.memmap(tmp_path / name, dtype="<f4", mode="w+", shape=(count,))


def rejected_without_allocating(function, *args, **kwargs) -> str:
    tracemalloc.start()
    try:
        with pytest.raises((FormatError, ModelError)) as caught:
            function(*args, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, peak
    return str(caught.value)


# --- one blob: the writer refuses what the reader rejects -------------------------------------


def test_the_writer_refuses_a_blob_the_reader_would_reject(tmp_path):
    count = limits.MAX_BLOB_BYTES // 4 + 1  # 2^29 + 1 float32 values: 4 bytes over the limit
    model = Model(net_with_blobs((count,)), [Payload(BlobAddress(100, 0, 0, 5), sparse_array(tmp_path, count))])
    message = rejected_without_allocating(api.encode, model, tmp_path / "big.cmps")
    assert message == (
        "layer 'big0' blob 0: 536,870,913 values of 4 bytes are 2,147,483,652 bytes, "
        "more than the 2,147,483,648 bytes a blob may hold"
    )
    assert not (tmp_path / "big.cmps").exists()


def test_the_reader_rejects_the_same_blob():
    count = limits.MAX_BLOB_BYTES // 4 + 1
    message = rejected_without_allocating(api.decode_bytes, zeros_file(count), "big.cmps")
    assert "big.cmps: section 1 (BLOB at byte" in message
    assert "layer 'big0' blob 0 value count is 536870913, more than the allowed 536870912" in message


def test_the_writer_refuses_a_float64_blob_over_the_limit(tmp_path):
    count = limits.MAX_BLOB_BYTES // 8 + 1
    net = caffe_pb2.NetParameter()
    net.layer.add(name="wide").blobs.add().shape.dim.append(count)
    values = np.memmap(tmp_path / "values.f8", dtype="<f8", mode="w+", shape=(count,))
    model = Model(net.SerializeToString(), [Payload(BlobAddress(100, 0, 0, 8), values)])
    with pytest.raises(ModelError, match=r"layer 'wide' blob 0: 268,435,457 values of 8 bytes are 2,147,483,656"):
        api.encode(model)


# --- the whole model -----------------------------------------------------------------------------


def test_a_tiny_file_that_decodes_to_gigabytes_is_rejected_before_decoding(tmp_path):
    """Three blobs of 2 GiB of zeros each, in a file of about a hundred bytes."""
    count = limits.MAX_BLOB_BYTES // 4
    data = zeros_file(count, count, count)
    assert len(data) < 200
    (tmp_path / "bomb.cmps").write_bytes(data)
    message = rejected_without_allocating(api.decode, tmp_path / "bomb.cmps", tmp_path / "out.caffemodel")
    decoded = 3 * limits.MAX_BLOB_BYTES + len(net_with_blobs(*[(count,)] * 3))
    assert (
        message
        == f"{tmp_path / 'bomb.cmps'}: the model decodes to {decoded:,} bytes, more than the limit of 4,294,967,296"
    )
    assert not (tmp_path / "out.caffemodel").exists()


def test_the_writer_refuses_a_model_over_the_total(tmp_path):
    count = limits.MAX_BLOB_BYTES // 4
    skeleton = net_with_blobs((count,), (count,), (count,))
    payloads = [
        Payload(BlobAddress(100, index, 0, 5), sparse_array(tmp_path, count, f"{index}.f4")) for index in range(3)
    ]
    message = rejected_without_allocating(api.encode, Model(skeleton, payloads))
    assert message.startswith("the model decodes to 6,442,45")
    assert message.endswith("bytes, more than the limit of 4,294,967,296")


def test_blobs_without_values_count_as_the_zeros_hdf5_writes():
    """A blob with a shape and no BLOB section becomes zeros of its shape in an .h5 output."""
    count = limits.MAX_BLOB_BYTES // 4
    data = framed([net_section(net_with_blobs(*[(count,)] * 3))])
    message = rejected_without_allocating(open_cmps, data)
    assert message.startswith("the model decodes to 6,442,45")


def test_the_decoded_size_bounds_the_values_too():
    """Every value takes at least 4 bytes: a model of more than 2^30 values is over the byte limit."""
    count = limits.MAX_BLOB_BYTES // 4
    skeleton = net_with_blobs((count,), (count,), (1,))  # 2^30 + 1 values
    with pytest.raises(FormatError) as caught:
        open_cmps(framed([net_section(skeleton)]))
    decoded = 2 * limits.MAX_BLOB_BYTES + 4 + len(skeleton)
    assert str(caught.value) == f"the model decodes to {decoded:,} bytes, more than the limit of 4,294,967,296"


def test_a_negative_dimension_is_refused_in_a_blob_without_values():
    data = framed([net_section(net_with_blobs((4, -1)))])
    with pytest.raises(FormatError, match=r"layer 'big0' blob 0: blob shape \[4, -1\] has a negative dimension"):
        open_cmps(data)


def test_decoded_size_is_the_net_plus_the_values():
    cmps = open_cmps(LENET)
    values = sum(entry.count * entry.dtype.itemsize for entry in cmps.entries)
    assert cmps.decoded_bytes == len(cmps.skeleton) + values
    dense = api.decode_bytes(LENET)
    assert 0 < len(lenet_like_bytes()) - cmps.decoded_bytes <= 8 * len(dense.payloads)


# --- layers and fields, counted before protobuf parses the skeleton -----------------------------


def test_millions_of_empty_layers_are_rejected_before_protobuf_parses_them():
    empty_layer = wire.length_delimited(LAYER_FIELD, 0)
    skeleton = empty_layer * 1_000_000
    data = framed([net_section(skeleton)])
    assert len(data) < 10_000
    message = rejected_without_allocating(api.inspect_bytes, data, "layers.cmps")
    assert message == "layers.cmps: section 0 (NETP at byte 20): the net has more than 65,536 layers, the limit"


def test_a_layer_with_a_million_blobs_is_rejected():
    empty_blob = wire.length_delimited(7, 0)
    layer = empty_blob * (limits.MAX_NET_FIELDS + 1)
    skeleton = wire.length_delimited(LAYER_FIELD, len(layer)) + layer
    with pytest.raises(FormatError, match="the net and its layers have more than 1,048,576 fields, the limit$"):
        api.inspect_bytes(framed([net_section(skeleton)]))


def test_as_many_layers_as_the_limit_are_accepted():
    skeleton = wire.length_delimited(LAYER_FIELD, 0) * limits.MAX_LAYERS
    assert len(open_cmps(framed([net_section(skeleton)])).layers) == limits.MAX_LAYERS


def test_a_caffemodel_with_too_many_layers_is_rejected_while_it_is_split(tmp_path):
    layer = caffe_pb2.NetParameter(layer=[caffe_pb2.LayerParameter(name="x")]).SerializeToString()
    (tmp_path / "many.caffemodel").write_bytes(layer * (limits.MAX_LAYERS + 1))
    with pytest.raises(ModelError, match=r"many\.caffemodel: the net has more than 65,536 layers, the limit"):
        api.load_model(tmp_path / "many.caffemodel")


# --- a caller's own bound: max_output_bytes ----------------------------------------------------


def test_max_output_bytes_refuses_a_larger_file_before_decoding(tmp_path):
    (tmp_path / "lenet.cmps").write_bytes(LENET)
    size = open_cmps(LENET).decoded_bytes
    with pytest.raises(FormatError) as caught:
        api.decode(tmp_path / "lenet.cmps", tmp_path / "out.caffemodel", max_output_bytes=size - 1)
    assert str(caught.value) == (
        f"{tmp_path / 'lenet.cmps'}: the model decodes to {size:,} bytes, more than max_output_bytes ({size - 1:,})"
    )
    assert not (tmp_path / "out.caffemodel").exists()
    api.decode(tmp_path / "lenet.cmps", tmp_path / "out.caffemodel", max_output_bytes=size)
    assert (tmp_path / "out.caffemodel").exists()


def test_max_output_bytes_checks_the_net_before_inflating_it():
    skeleton = net_with_blobs((4,)) + b"\x0a\x00" * 50_000  # a long run of empty names
    message = rejected_without_allocating(api.decode_bytes, framed([net_section(skeleton)]), max_output_bytes=1000)
    assert message == (
        f"section 0 (NETP at byte 20): the net alone decodes to {len(skeleton):,} bytes, "
        "more than max_output_bytes (1,000)"
    )


def test_max_output_bytes_bounds_in_memory_decoding_too():
    with pytest.raises(FormatError, match="more than max_output_bytes"):
        api.decode_bytes(zeros_file(1000), max_output_bytes=1000)
    assert api.decode_bytes(zeros_file(1000), max_output_bytes=5000).payloads[0].values.size == 1000


@pytest.mark.parametrize("bound", [-1, 1.5, True, "100"])
def test_max_output_bytes_must_be_a_whole_number(tmp_path, bound):
    (tmp_path / "lenet.cmps").write_bytes(LENET)
    with pytest.raises(UsageError, match="max_output_bytes must be a whole number of bytes, 0 or more, got"):
        api.decode(tmp_path / "lenet.cmps", max_output_bytes=bound)


def test_cli_max_output_bytes(tmp_path):
    (tmp_path / "lenet.cmps").write_bytes(LENET)
    code, out, err = run_cli("decode", tmp_path / "lenet.cmps", "-o", tmp_path / "out.h5", "--max-output-bytes", 1000)
    assert code == 2
    assert err.startswith(f"cmpstore decode: error: {tmp_path / 'lenet.cmps'}: the model decodes to ")
    assert err.endswith("bytes, more than max_output_bytes (1,000)\n")
    assert not (tmp_path / "out.h5").exists()
    code, out, err = run_cli("decode", tmp_path / "lenet.cmps", "-o", tmp_path / "out.h5", "--max-output-bytes", 10**7)
    assert code == 0, err

"""The limits of cmpstore.limits: the writer refuses what the reader rejects, and both check before any work."""

import tracemalloc
import zlib

import h5py
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


# --- HDF5: declared sizes against the limits and against the bytes stored -------------------------


def caffe_h5(path, build) -> None:
    """A Caffe HDF5 file with one layer 'conv1'; ``build(h5, layer_group)`` adds its datasets."""
    with h5py.File(path, "w") as h5:
        build(h5, h5.create_group("data").create_group("conv1"))


def test_hdf5_blob_over_the_limit_is_refused_before_reading(tmp_path):
    count = limits.MAX_BLOB_BYTES // 4 + 1
    caffe_h5(
        tmp_path / "big.h5",
        lambda h5, layer: layer.create_dataset("0", shape=(count,), dtype="<f4", chunks=(1 << 20,), compression="gzip"),
    )
    assert (tmp_path / "big.h5").stat().st_size < 10_000
    message = rejected_without_allocating(api.load_model, tmp_path / "big.h5")
    assert message == (
        f"{tmp_path / 'big.h5'}: layer 'conv1' blob 0: 536,870,913 values of 4 bytes are 2,147,483,652 bytes, "
        "more than the 2,147,483,648 bytes a blob may hold"
    )


def test_hdf5_diff_that_would_inflate_beyond_deflate_is_refused(tmp_path):
    """A chunked, compressed diff never written: HDF5 would fill a gigabyte with its fill value."""

    def build(h5, layer):
        layer.create_dataset("0", data=np.ones(4, "<f4"))
        diff = h5.create_group("diff").create_group("conv1")
        diff.create_dataset("0", shape=(1 << 28,), dtype="<f4", chunks=(1 << 20,), compression="gzip")

    caffe_h5(tmp_path / "diff.h5", build)
    message = rejected_without_allocating(api.encode, tmp_path / "diff.h5")
    assert message == (
        f"{tmp_path / 'diff.h5'}: layer 'conv1' diff 0: declares 1,073,741,824 bytes of values but stores 0 bytes, "
        "more than any HDF5 filter inflates (DEFLATE's 1032:1)"
    )


def test_hdf5_compressed_at_deflates_best_ratio_is_read(tmp_path):
    zeros = np.zeros(1 << 20, "<f4")
    caffe_h5(
        tmp_path / "zeros.h5",
        lambda h5, layer: layer.create_dataset(
            "0", data=zeros, chunks=(1 << 20,), compression="gzip", compression_opts=9
        ),
    )
    with h5py.File(tmp_path / "zeros.h5") as h5:
        assert zeros.nbytes > 1000 * h5["data/conv1/0"].id.get_storage_size()
    assert api.load_weights(tmp_path / "zeros.h5")["conv1"][0].tobytes() == zeros.tobytes()


def test_hdf5_empty_dataset_is_a_clear_error(tmp_path):
    caffe_h5(tmp_path / "empty.h5", lambda h5, layer: layer.create_dataset("0", data=h5py.Empty("<f4")))
    with pytest.raises(ModelError) as caught:
        api.load_model(tmp_path / "empty.h5")
    assert str(caught.value) == (
        f"{tmp_path / 'empty.h5'}: layer 'conv1' blob 0: dataset has no dataspace (h5py.Empty), so no values; "
        "a blob is an array"
    )


def test_hdf5_layer_name_that_is_not_utf8_is_a_clear_error(tmp_path):
    with h5py.File(tmp_path / "latin1.h5", "w") as h5:
        h5.create_group("data").create_group(b"caf\xe9").create_dataset("0", data=np.ones(3, "<f4"))
    with pytest.raises(ModelError) as caught:
        api.load_model(tmp_path / "latin1.h5")
    assert str(caught.value) == (
        f"{tmp_path / 'latin1.h5'}: layer name b'caf\\xe9' is not UTF-8 text, which Caffe layer names are"
    )


# --- the authors' .net files: the prototxt's claims first, blamed on the prototxt ------------------

HAN_NET = """
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: {inputs} }} }} }}
layer {{ name: "fc1" type: "InnerProduct" bottom: "data" top: "fc1" inner_product_param {{ num_output: {outputs} }} }}
"""


def han_files(tmp_path, prototxt: str, net: bytes = b"") -> tuple:
    (tmp_path / "deploy.prototxt").write_text(prototxt)
    (tmp_path / "model.net").write_bytes(net)
    return tmp_path / "model.net", tmp_path / "deploy.prototxt"


@pytest.mark.parametrize(
    "inputs, outputs, weights",
    [(1 << 17, 1 << 16, "8,589,934,592"), (40_000, 25_000, "1,000,000,000")],
)
def test_han_layer_over_the_blob_limit_blames_the_prototxt(tmp_path, inputs, outputs, weights):
    net, prototxt = han_files(tmp_path, HAN_NET.format(inputs=inputs, outputs=outputs), b"\0" * 1000)
    message = rejected_without_allocating(api.import_han, net, prototxt, tmp_path / "out.cmps")
    assert message.startswith(f"{prototxt}: layer 'fc1' blob 0: {weights} values of 4 bytes are ")
    assert message.endswith("more than the 2,147,483,648 bytes a blob may hold")
    assert not (tmp_path / "out.cmps").exists()


def test_han_model_over_the_total_blames_the_prototxt(tmp_path):
    """Three layers of 2^29 weights, each the largest blob the format holds: 6 GiB in all."""
    widths = [1 << 14, 1 << 15, 1 << 14, 1 << 15]
    prototxt = HAN_NET.format(inputs=widths[0], outputs=widths[1])
    for index, width in enumerate(widths[2:], start=2):
        prototxt += (
            f'layer {{ name: "fc{index}" type: "InnerProduct" bottom: "fc{index - 1}" top: "fc{index}" '
            f"inner_product_param {{ num_output: {width} }} }}\n"
        )
    net, prototxt_path = han_files(tmp_path, prototxt, b"\0" * 1000)
    message = rejected_without_allocating(api.import_han, net, prototxt_path)
    decoded = 4 * (3 * (1 << 29) + sum(widths[1:]))  # weights and biases
    assert message == f"{prototxt_path}: the model decodes to {decoded:,} bytes, more than the limit of 4,294,967,296"


def test_han_file_too_small_for_what_the_prototxt_declares(tmp_path):
    net, prototxt = han_files(tmp_path, HAN_NET.format(inputs=100, outputs=3000), b"\0" * 100)
    message = rejected_without_allocating(api.import_han, net, prototxt)
    assert message == (
        f"{net}: holds 100 bytes, fewer than the 12,068 that the entry counts, codebooks and biases of "
        f"the 1 layers of {prototxt} take"
    )


def test_han_layer_without_bias_blames_the_prototxt(tmp_path):
    prototxt = HAN_NET.format(inputs=10, outputs=3).replace("num_output: 3", "num_output: 3 bias_term: false")
    net, prototxt = han_files(tmp_path, prototxt)
    with pytest.raises(ModelError) as caught:
        api.import_han(net, prototxt)
    assert str(caught.value) == (
        f"{prototxt}: layer 'fc1': the .net format stores a bias for every layer, but this one has none"
    )


CONV = (
    'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
    "convolution_param { num_output: 4 kernel_size: 3 %s } }"
)
INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: %d dim: 8 } } }'
FC_AFTER = 'layer { name: "fc1" type: "InnerProduct" bottom: "%s" top: "fc1" inner_product_param { num_output: 2 } }'


@pytest.mark.parametrize(
    "prototxt, message",
    [
        (
            INPUT % -8 + CONV % "",
            "layer 'data': its output 'data' has the shape [1, 3, -8, 8], with a negative dimension",
        ),
        (INPUT % 8 + CONV % "stride: 0", "layer 'conv1': stride [0, 0]: a stride must be at least 1"),
        (
            INPUT % 8
            + CONV % ""
            + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv1" bottom: "data" top: "loss" }'
            + FC_AFTER % "loss",
            "layer 'fc1': axis 1 is out of range for its input of shape []",
        ),
        (
            INPUT % 8
            + CONV % ""
            + 'layer { name: "flat" type: "Flatten" bottom: "conv1" top: "flat" }'
            + 'layer { name: "cat" type: "Concat" bottom: "conv1" bottom: "flat" top: "cat" }'
            + FC_AFTER % "cat",
            "layer 'cat': cannot concatenate inputs of shapes [1, 4, 6, 6], [1, 144] along axis 1",
        ),
        (
            INPUT % 8 + CONV.replace('bottom: "data" ', "") % "",
            "layer 'conv1': a Convolution layer needs an input (bottom), and this one has none",
        ),
    ],
    ids=["negative dimension", "stride 0", "fc after a loss", "concat of ranks 4 and 2", "conv without bottom"],
)
def test_han_prototxt_errors_are_one_line_naming_the_prototxt_and_the_layer(tmp_path, prototxt, message):
    net, prototxt_path = han_files(tmp_path, prototxt, b"\0" * 100)
    code, out, err = run_cli("import-han", net, "--prototxt", prototxt_path, "-o", tmp_path / "out.cmps")
    assert code == 2
    assert err == f"cmpstore import-han: error: {prototxt_path}: {message}\n"

"""What the library refuses from a user before it works: weights it cannot prune, seeds, payloads, selectors."""

import os
import re
import warnings

import numpy as np
import pytest
from common import run_cli

from cmpstore import api
from cmpstore.caffe._proto import caffe_pb2
from cmpstore.caffe.model import BlobAddress, Model, Payload
from cmpstore.compression import selectors
from cmpstore.compression.transform import compress_weights
from cmpstore.errors import ModelError, UsageError
from cmpstore.finetune import finetune
from cmpstore.finetune.constraints import constrain
from cmpstore.synthetic import build_model

NONFINITE = "holds 3 NaN and 1 infinite weights; prune and quantize need finite weights"


def with_nonfinite_fc1() -> Model:
    """The example LeNet with three NaN and one infinite weight in fc1's weight blob."""
    model = build_model(seed=0)
    fc1 = next(index for index, layer in enumerate(model.layers) if layer.name == "fc1")
    payloads = []
    for payload in model.payloads:
        values = payload.values
        if (payload.address.layer_index, payload.address.blob_index) == (fc1, 0):
            values = values.copy()
            values[[3, 50, 700]] = np.nan
            values[9] = -np.inf
        payloads.append(Payload(payload.address, values))
    return Model(model.skeleton, payloads, model.source_format)


# --- non-finite weights ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ratios, clusters, init",
    [
        ({"fc1": 0.5}, None, "linear"),
        (None, {"fc": 16}, "linear"),
        (None, {"fc1": 8}, "optimal"),
        ({"fc": 0.9}, {"fc": 4}, "density"),
    ],
)
def test_nonfinite_weights_are_refused_naming_the_layer(ratios, clusters, init):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning on the way
        with pytest.raises(ModelError) as caught:
            compress_weights(with_nonfinite_fc1(), ratios, clusters, init=init)
    assert str(caught.value) == f"layer 'fc1' blob 0: {NONFINITE}"


def test_one_nonfinite_weight_is_named_in_the_singular():
    weights = np.array([0.5, -0.25, np.inf, 0.125], dtype=np.float32)
    with pytest.raises(ModelError, match=r"^layer 'fc9' blob 0: holds 1 infinite weight; prune and quantize"):
        constrain("fc9", weights, 0.5, None)


def test_finetune_constraints_refuse_nonfinite_weights():
    weights = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
    weights[2, 3] = np.nan
    with pytest.raises(ModelError, match=r"^layer 'fc1' blob 0: holds 1 NaN weight; prune and quantize need finite"):
        constrain("fc1", weights, 0.5, 4)


def test_nonfinite_weights_in_layers_left_alone_are_stored_as_they_are():
    model, outcomes = compress_weights(with_nonfinite_fc1(), {"conv": 0.5}, {"fc2": 4})
    assert [outcome.name for outcome in outcomes] == ["conv1", "conv2", "fc2"]
    back = api.decode_bytes(api.encode(model))
    assert np.isnan(back.weights_by_layer()["fc1"][0]).sum() == 3


@pytest.mark.parametrize("command, option", [("prune", "--ratios=fc1=0.5"), ("quantize", "--clusters=fc1=8")])
def test_cli_refuses_nonfinite_weights_in_one_line(tmp_path, command, option):
    source = tmp_path / "nan.caffemodel"
    api.save_model(with_nonfinite_fc1(), source)
    extra = ["--init", "optimal"] if command == "quantize" else []
    code, out, err = run_cli(command, source, option, *extra, "-o", tmp_path / "out.caffemodel")
    assert code == 2
    assert err == f"cmpstore {command}: error: {source}: layer 'fc1' blob 0: {NONFINITE}\n"
    assert not (tmp_path / "out.caffemodel").exists()


# --- seeds -------------------------------------------------------------------------------------

SEED = "seed: a seed must be a whole number, 0 or more (numpy's generators need it), got"


@pytest.mark.parametrize("seed", [-1, 1.5, True, "3"])
def test_compress_weights_refuses_a_bad_seed(seed):
    with pytest.raises(UsageError, match=f"^{re.escape(SEED)} {seed}$"):
        compress_weights(build_model(seed=0), None, {"fc": 4}, init="random", seed=seed)


def test_example_refuses_a_negative_seed():
    with pytest.raises(UsageError, match=f"^{re.escape(SEED)} -1$"):
        build_model(seed=-1)


def test_finetune_refuses_a_negative_seed_before_it_starts(tmp_path):
    """The library names its own parameter, not the command line's flag."""
    with pytest.raises(UsageError, match=f"^{re.escape(SEED)} -7$"):
        finetune("net", "solver", "weights", tmp_path / "work", layers=["fc1:0.5:4"], iterations=[1, 1], seed=-7)
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("command", ["quantize", "compress", "example"])
def test_cli_refuses_a_negative_seed(tmp_path, command):
    source = tmp_path / "lenet.caffemodel"
    api.save_model(build_model(seed=0), source)
    args = ["--seed", "-1"] if command == "example" else [source, "--clusters", "fc=4", "--seed", "-1", "-o"]
    output = tmp_path / ("out.cmps" if command == "compress" else "out.caffemodel")
    code, out, err = run_cli(command, *args, output)
    assert code == 2
    where = f"{source}: " if command == "quantize" else ""  # prune and quantize name their input in every error
    assert err == f"cmpstore {command}: error: {where}--{SEED} -1\n"


# --- HDF5 layer names ------------------------------------------------------------------------------


def renamed(names: dict[str, str]) -> Model:
    """The example LeNet with some layers renamed."""
    model = build_model(seed=0)
    net = caffe_pb2.NetParameter.FromString(model.skeleton)
    for layer in net.layer:
        layer.name = names.get(layer.name, layer.name)
    return Model(net.SerializeToString(), model.payloads, model.source_format)


HDF5_LAYOUT = "so Caffe's HDF5 layout (data/<layer name>/<blob index>) cannot hold this layer"


@pytest.mark.parametrize(
    "name, problem",
    [
        ("conv1/7x7_s2", "layer 'conv1/7x7_s2': HDF5 reads '/' in a name as a path into other groups"),
        ("/evil", "layer '/evil': HDF5 reads '/' in a name as a path into other groups"),
        (".", "layer '.': '.' names the enclosing group itself in HDF5"),
        ("", "layer #1 (unnamed): an empty name cannot name an HDF5 group"),
        ("a\0b", "layer 'a\0b': HDF5 names end at a NUL character"),
    ],
)
def test_layer_names_hdf5_cannot_hold_are_refused_before_writing(tmp_path, name, problem):
    with pytest.raises(ModelError) as caught:
        api.save_model(renamed({"conv1": name}), tmp_path / "out.h5")
    assert str(caught.value) == (
        f"{tmp_path / 'out.h5'}: {problem}, {HDF5_LAYOUT}; write a binary caffemodel, which keeps any name"
    )
    assert os.listdir(tmp_path) == []


def test_cli_decode_to_h5_refuses_googlenet_names_in_one_line(tmp_path):
    api.encode(renamed({"conv1": "conv1/7x7_s2", "conv2": "conv2/3x3"}), tmp_path / "g.cmps")
    code, out, err = run_cli("decode", tmp_path / "g.cmps", "--format", "h5", "-o", tmp_path / "g.h5")
    assert code == 2
    assert err == (
        f"cmpstore decode: error: {tmp_path / 'g.h5'}: layer 'conv1/7x7_s2': HDF5 reads '/' in a name as a path "
        f"into other groups, {HDF5_LAYOUT} (and 1 more layers); write a binary caffemodel, which keeps any name\n"
    )
    assert not (tmp_path / "g.h5").exists()
    code, out, err = run_cli("decode", tmp_path / "g.cmps", "-o", tmp_path / "g.caffemodel")
    assert code == 0, err
    assert "conv1/7x7_s2" in api.load_weights(tmp_path / "g.caffemodel")


def test_names_hdf5_can_hold_round_trip(tmp_path):
    model = renamed({"conv1": "..", "conv2": " . ", "fc1": "fc 1 (ünï)"})
    api.save_model(model, tmp_path / "odd.h5")
    api.save_model(model, tmp_path / "odd.caffemodel")
    assert api.verify(tmp_path / "odd.caffemodel", tmp_path / "odd.h5") == []
    assert sorted(api.load_weights(tmp_path / "odd.h5")) == [" . ", "..", "fc 1 (ünï)", "fc2"]


# --- verify compares every value field -------------------------------------------------------------


def caffemodel_with(tmp_path, name: str, data: list[float] | None, double_data: list[float] | None):
    net = caffe_pb2.NetParameter()
    blob = net.layer.add(name="ip", type="InnerProduct").blobs.add()
    blob.shape.dim.append(4)
    if data is not None:
        blob.data.extend(data)
    if double_data is not None:
        blob.double_data.extend(double_data)
    (tmp_path / name).write_bytes(net.SerializeToString())
    return tmp_path / name


def test_verify_compares_data_even_where_double_data_is_present(tmp_path):
    a = caffemodel_with(tmp_path, "a.caffemodel", [1, 2, 3, 4], [0.5, 0.5, 0.5, 0.5])
    b = caffemodel_with(tmp_path, "b.caffemodel", [1, 2, 3, 5], [0.5, 0.5, 0.5, 0.5])
    assert api.verify(a, b) == ["layer 'ip' blob 0 data: 1 of 4 values differ"]
    assert api.verify(a, a) == []


def test_verify_reports_a_value_field_only_one_file_has(tmp_path):
    a = caffemodel_with(tmp_path, "a.caffemodel", [1, 2, 3, 4], [0.5, 0.5, 0.5, 0.5])
    b = caffemodel_with(tmp_path, "b.caffemodel", [1, 2, 3, 4], None)
    assert api.verify(a, b) == [f"layer 'ip' blob 0 double_data: no double_data values in {b}"]
    c = caffemodel_with(tmp_path, "c.caffemodel", None, [0.5, 0.5, 0.5, 0.5])
    assert api.verify(c, a) == [f"layer 'ip' blob 0 data: no data values in {c}"]


def test_verify_keeps_its_message_for_plain_float_blobs(tmp_path):
    a = caffemodel_with(tmp_path, "a.caffemodel", [1, 2, 3, 4], None)
    b = caffemodel_with(tmp_path, "b.caffemodel", [1, 0, 3, 0], None)
    assert api.verify(a, b) == ["layer 'ip' blob 0: 2 of 4 values differ"]


# --- payloads a caller builds --------------------------------------------------------------------


def with_payload(change) -> Model:
    """The example LeNet with conv1's weight payload (the first) replaced by ``change(payload)``."""
    model = build_model(seed=0)
    first, *rest = model.payloads
    return Model(model.skeleton, [change(first), *rest], model.source_format)


BAD_PAYLOADS = {
    "int32": (
        lambda p: Payload(p.address, p.values.view("<i4")),
        "layer 'conv1' blob 0: values are int32 (<i4); data (field 5) holds <f4",
    ),
    "float64 as data": (
        lambda p: Payload(p.address, p.values.astype("<f8")),
        "layer 'conv1' blob 0: values are float64 (<f8); data (field 5) holds <f4",
    ),
    "big-endian": (
        lambda p: Payload(p.address, p.values.astype(">f4")),
        "layer 'conv1' blob 0: values are big-endian float32 (>f4); data (field 5) holds <f4",
    ),
    "float32 as double_data": (
        lambda p: Payload(BlobAddress(100, 1, 0, 8), p.values),
        "layer 'conv1' blob 0: values are float32 (<f4); double_data (field 8) holds <f8",
    ),
    "2-D": (
        lambda p: Payload(p.address, p.values.reshape(20, 25)),
        "layer 'conv1' blob 0: values have the shape (20, 25); a payload is 1-D (values.reshape(-1))",
    ),
    "strided": (
        lambda p: Payload(p.address, np.repeat(p.values, 2)[::2]),
        "layer 'conv1' blob 0: values are not contiguous in memory (use np.ascontiguousarray)",
    ),
    "a list": (
        lambda p: Payload(p.address, p.values.tolist()),
        "layer 'conv1' blob 0: values must be a numpy array, got list",
    ),
    "no such layer": (
        lambda p: Payload(BlobAddress(100, 99, 0, 5), p.values),
        "a payload names layer 99 of field 100 (layer), which the net does not have",
    ),
    "no such layer field": (
        lambda p: Payload(BlobAddress(3, 1, 0, 5), p.values),
        "a payload names layer field 3; use 100 (layer) or 2 (layers)",
    ),
    "no such blob": (
        lambda p: Payload(BlobAddress(100, 1, 5, 5), p.values),
        "layer 'conv1': a payload names blob 5, but the layer has 2 blobs",
    ),
    "no such value field": (
        lambda p: Payload(BlobAddress(100, 1, 0, 6), p.values),
        "layer 'conv1' blob 0: value field 6 is not 5 (data), 8 (double_data) or 12 (raw_data)",
    ),
    "short": (
        lambda p: Payload(p.address, p.values[:499].copy()),
        "layer 'conv1' blob 0: blob holds 499 values but its shape [20, 1, 5, 5] needs 500",
    ),
    "not a Payload": (lambda p: (p.address, p.values), "a payload must be a Payload with a BlobAddress, got (Blob"),
}


@pytest.mark.parametrize("case", BAD_PAYLOADS, ids=list(BAD_PAYLOADS))
@pytest.mark.parametrize("entry", ["encode", "save_model", "compress_weights", "compress"])
def test_bad_payloads_are_usage_errors_at_every_entry(tmp_path, case, entry):
    change, message = BAD_PAYLOADS[case]
    model = with_payload(change)
    calls = {
        "encode": lambda: api.encode(model, tmp_path / "out.cmps"),
        "save_model": lambda: api.save_model(model, tmp_path / "out.caffemodel"),
        "compress_weights": lambda: compress_weights(model, {"fc": 0.5}),
        "compress": lambda: api.compress(model, tmp_path / "out.cmps", ratios={"fc": 0.5}),
    }
    with pytest.raises(UsageError) as caught:
        calls[entry]()
    assert str(caught.value).startswith(message)
    assert os.listdir(tmp_path) == []


def test_the_same_values_twice_are_refused():
    model = build_model(seed=0)
    twice = Model(model.skeleton, [model.payloads[0], *model.payloads], model.source_format)
    with pytest.raises(UsageError, match="^layer 'conv1' blob 0: two payloads for its data$"):
        api.encode(twice)


def test_values_left_in_the_skeleton_are_refused():
    model = build_model(seed=0)
    net = caffe_pb2.NetParameter.FromString(model.skeleton)
    net.layer[2].blobs[1].double_data.extend([1.0] * 50)
    with pytest.raises(UsageError) as caught:
        api.encode(Model(net.SerializeToString(), model.payloads))
    assert str(caught.value) == (
        "layer 'conv2' blob 1: the skeleton still holds 50 double_data values (field 8); "
        "values belong in payloads (a .cmps file's BLOB sections)"
    )


def test_big_endian_weights_are_never_written_byte_swapped(tmp_path):
    """save_model used to write the big-endian bytes as they were: every weight byte-swapped."""
    model = with_payload(lambda p: Payload(p.address, p.values.astype(">f4")))
    with pytest.raises(UsageError):
        api.save_model(model, tmp_path / "swapped.caffemodel")
    fixed = with_payload(lambda p: Payload(p.address, p.values.astype(">f4").astype("<f4")))
    api.save_model(fixed, tmp_path / "fixed.caffemodel")
    assert api.load_weights(tmp_path / "fixed.caffemodel")["conv1"][0].reshape(-1).tolist() == (
        build_model(seed=0).payloads[0].values.tolist()
    )


def test_a_model_that_is_not_a_model():
    with pytest.raises(UsageError, match="^expected a cmpstore Model, got str$"):
        compress_weights("lenet.caffemodel", {"fc": 0.5})
    with pytest.raises(UsageError, match="^expected a cmpstore Model, got dict$"):
        api.save_model({}, "out.caffemodel")


def test_weights_by_layer_names_a_bad_address_instead_of_a_key_error():
    model = with_payload(lambda p: Payload(BlobAddress(100, 99, 0, 5), p.values))
    with pytest.raises(ModelError, match="a payload names layer 99 of field 100"):
        api.weights_by_layer(model)


# --- layer selectors ------------------------------------------------------------------------------


def with_pool1() -> Model:
    """The example LeNet plus a Pooling layer 'pool1' (no weights), appended so no payload moves."""
    model = build_model(seed=0)
    net = caffe_pb2.NetParameter.FromString(model.skeleton)
    net.layer.add(name="pool1", type="Pooling", bottom=["conv1"], top=["pool1"])
    return Model(net.SerializeToString(), model.payloads, model.source_format)


@pytest.mark.parametrize("option, setting", [("ratios", {"pool1": 0.5}), ("clusters", {"pool1": 8})])
def test_a_setting_for_a_layer_without_weights_is_refused(option, setting):
    ratios, clusters = (setting, None) if option == "ratios" else (None, setting)
    with pytest.raises(UsageError) as caught:
        compress_weights(with_pool1(), ratios, clusters)
    assert str(caught.value) == (
        f"{option} names layer 'pool1', a Pooling layer: {option} applies only to the weights of convolution and "
        "inner-product layers"
    )


def test_index_bits_for_a_layer_without_weights_is_refused():
    with pytest.raises(UsageError, match="^index_bits names layer 'pool1', a Pooling layer: index_bits applies"):
        api.encode(with_pool1(), index_bits={"pool1": 8})


def test_cli_refuses_a_layer_without_weights_and_a_selector_given_twice(tmp_path):
    source = tmp_path / "pool.caffemodel"
    api.save_model(with_pool1(), source)
    code, out, err = run_cli("prune", source, "--ratios", "pool1=0.5", "-o", tmp_path / "out.caffemodel")
    assert code == 2
    assert err == (
        f"cmpstore prune: error: {source}: --ratios names layer 'pool1', a Pooling layer: --ratios applies only to "
        "the weights of convolution and inner-product layers\n"
    )
    code, out, err = run_cli("compress", source, "--ratios", "fc=0.5,fc=0.7", "-o", tmp_path / "out.cmps")
    assert code == 2
    assert err == "cmpstore compress: error: --ratios: fc is given twice (fc=0.5 and fc=0.7)\n"
    assert os.listdir(tmp_path) == ["pool.caffemodel"]


def test_a_selector_given_twice_is_refused_by_the_parser():
    with pytest.raises(UsageError, match=r"^--index-bits: conv1 is given twice \(conv1=8 and conv1=8\)$"):
        selectors.parse("conv1=8, fc=5, conv1=8", int, "--index-bits")
    assert selectors.parse("conv=8,conv1=6", int, "--index-bits") == {"conv": 8, "conv1": 6}

"""Untrusted input: corruption is always noticed, and only CmpstoreError ever escapes."""

import os
import re
import tracemalloc
import zlib

import h5py
import numpy as np
import pytest
from common import framed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nets import layer_net_bytes, lenet_like_bytes

from cmpstore import api
from cmpstore.caffe._proto import caffe_pb2
from cmpstore.caffe.caffemodel import split_caffemodel
from cmpstore.cmps import container
from cmpstore.errors import CmpstoreError, FormatError, ModelError
from cmpstore.streams.varint import encode_varint
from cmpstore.synthetic import LayerSpec, build_model

SMALL = api.encode(build_model((LayerSpec("c", "Convolution", (4, 1, 3, 3), 0.5, 8),), seed=3))
ZOO = api.encode(split_caffemodel(layer_net_bytes()))
# smallest: else fc1 keeps the DEFLATE streams that decode faster for under 1% more.
LENET_ANS = api.encode(split_caffemodel(lenet_like_bytes()), coder="ans", smallest=True)
# The section whose blob is range-ANS coded (fc1's weights).
ANS_SECTION = 1 + [s["codec"] for s in api.inspect_bytes(LENET_ANS)["sections"][1:]].index("sparse-ans")
LENET = api.encode(split_caffemodel(lenet_like_bytes()))
# The last section whose blob is coded in rANS byte planes (codec 4: fc1's bias).
SHUFFLED_ANS_SECTION = max(
    number for number, s in enumerate(api.inspect_bytes(LENET)["sections"]) if s.get("codec") == "shuffled-ans"
)
PLACE = re.compile(r"header|section \d+|magic")


def assert_rejected(data: bytes, reader=api.decode_bytes) -> str:
    """``reader(data)`` must raise a CmpstoreError that is not a leaked internal error."""
    with pytest.raises(CmpstoreError) as caught:
        reader(data)
    message = str(caught.value)
    assert "internal error" not in message, message
    return message


def sections_of(data: bytes) -> list[tuple[bytes, bytes]]:
    return [(s.kind, bytes(s.payload)) for s in container.read_sections(data)]


def test_every_single_bit_flip_names_the_damage():
    for bit in range(8 * len(SMALL)):
        damaged = bytearray(SMALL)
        damaged[bit // 8] ^= 1 << (bit % 8)
        assert PLACE.search(assert_rejected(bytes(damaged)))


def test_ten_thousand_sampled_bit_flips_in_a_larger_file():
    positions = np.random.default_rng(0).choice(8 * len(LENET), size=10_000, replace=False)
    for bit in positions.tolist():
        damaged = bytearray(LENET)
        damaged[bit // 8] ^= 1 << (bit % 8)
        assert PLACE.search(assert_rejected(bytes(damaged)))


def test_verify_fails_on_a_damaged_file(tmp_path):
    original = tmp_path / "m.caffemodel"
    original.write_bytes(lenet_like_bytes())
    damaged = bytearray(LENET)
    damaged[len(damaged) // 3] ^= 0x04
    (tmp_path / "bad.cmps").write_bytes(bytes(damaged))
    with pytest.raises(FormatError, match=r"bad\.cmps: section \d+ at byte \d+: checksum mismatch"):
        api.verify(original, tmp_path / "bad.cmps")


@pytest.mark.parametrize("length", range(len(SMALL)))
def test_every_truncation(length):
    assert_rejected(SMALL[:length])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_payloads_with_valid_checksums(data):
    """Checksums fixed up, so the mutations reach the section and codec validation."""
    target = data.draw(st.sampled_from(["any section", "sparse-ans", "shuffled-ans"]))
    if target == "any section":
        sections = sections_of(ZOO)
        index = data.draw(st.integers(0, len(sections) - 1))
    elif target == "sparse-ans":
        sections, index = sections_of(LENET_ANS), ANS_SECTION
    else:
        sections, index = sections_of(LENET), SHUFFLED_ANS_SECTION
    kind, payload = sections[index]
    payload = bytearray(payload)
    action = data.draw(st.sampled_from(["flip", "truncate", "insert", "overwrite"]))
    if action == "flip" and payload:
        for _ in range(data.draw(st.integers(1, 4))):
            payload[data.draw(st.integers(0, len(payload) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    elif action == "truncate":
        del payload[data.draw(st.integers(0, len(payload))) :]
    elif action == "insert":
        at = data.draw(st.integers(0, len(payload)))
        payload[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    else:
        at = data.draw(st.integers(0, len(payload)))
        chunk = data.draw(st.binary(min_size=1, max_size=16))
        payload[at : at + len(chunk)] = chunk
    sections[index] = (kind, bytes(payload))
    mutated = framed(sections)
    try:
        model = api.decode_bytes(mutated)
    except CmpstoreError as exc:
        assert "internal error" not in str(exc), str(exc)
    else:
        api.check_shapes(model)  # a mutation that still decodes must give a consistent model


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 40))
def test_random_bytes_behind_a_valid_header(tail, sections):
    assert_rejected(container.header_bytes(sections) + tail)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.binary(max_size=64))
def test_random_sections_with_valid_checksums(first, second):
    assert_rejected(framed([(b"NETP", first), (b"BLOB", second)]))


def blob_section(count: int, codec: int = 2, body: bytes = b"") -> bytes:
    head = b"".join(encode_varint(v) for v in (100, 1, 0, 5, codec, count))
    return head + body


def test_huge_claims_are_rejected_without_allocating():
    sections = sections_of(LENET)
    claims = [
        blob_section(1 << 40),  # 2**40 weights
        blob_section(1 << 28, codec=0),  # 1 GiB of raw values in a few bytes
        blob_section(500, codec=1, body=b"x" * 10),  # deflate that cannot hold 500 values
        blob_section(500, codec=2, body=b"".join(encode_varint(v) for v in (8, 1 << 40, 0, 0))),
    ]
    tracemalloc.start()
    try:
        for claim in claims:
            assert_rejected(framed([sections[0], (b"BLOB", claim)]))
        huge_skeleton = encode_varint(1) + encode_varint(1 << 31) + zlib.compress(b"\0" * 100)
        assert "more than its stream can inflate" in assert_rejected(framed([(b"NETP", huge_skeleton)]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20


def test_shape_that_overflows_int64_is_rejected(tmp_path):
    net = caffe_pb2.NetParameter.FromString(lenet_like_bytes())
    del net.layer[1].blobs[0].shape.dim[:]
    net.layer[1].blobs[0].shape.dim.extend([2**32, 2**32])  # np.prod wraps this to 0
    assert_rejected(net.SerializeToString(), lambda data: api.check_shapes(split_caffemodel(data)))
    net.layer[1].blobs[0].shape.dim[:] = [-20, -25]
    assert "negative dimension" in assert_rejected(
        net.SerializeToString(), lambda data: api.check_shapes(split_caffemodel(data))
    )


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_caffemodels(data):
    model = bytearray(layer_net_bytes())
    action = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
    if action == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            model[data.draw(st.integers(0, len(model) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    elif action == "truncate":
        del model[data.draw(st.integers(0, len(model) - 1)) :]
    else:
        at = data.draw(st.integers(0, len(model)))
        model[at:at] = data.draw(st.binary(min_size=1, max_size=16))

    def load(raw):
        return api.check_shapes(split_caffemodel(raw))

    try:
        load(bytes(model))
    except ModelError as exc:
        assert "internal error" not in str(exc)


@pytest.mark.parametrize("field, count", [("data", 7), ("double_data", 500)])
def test_a_skeleton_that_still_holds_values_is_rejected(tmp_path, field, count):
    """Decoded, such a blob would hold two value fields; Caffe reads one, verify used to compare the other."""
    sections = sections_of(LENET)
    net = caffe_pb2.NetParameter.FromString(api.decode_bytes(LENET).skeleton)
    getattr(net.layer[1].blobs[0], field).extend([0.5] * count)
    skeleton = net.SerializeToString()
    sections[0] = (b"NETP", encode_varint(1) + encode_varint(len(skeleton)) + zlib.compress(skeleton))
    (tmp_path / "values.cmps").write_bytes(framed(sections))
    number = 5 if field == "data" else 8
    with pytest.raises(FormatError) as caught:
        api.decode(tmp_path / "values.cmps", tmp_path / "out.caffemodel")
    assert str(caught.value) == (
        f"{tmp_path / 'values.cmps'}: section 0 (NETP at byte 20), layer 'conv1' blob 0: the skeleton still holds "
        f"{count} {field} values (field {number}); values belong in payloads (a .cmps file's BLOB sections)"
    )


def test_duplicate_layer_names(tmp_path):
    net = caffe_pb2.NetParameter.FromString(lenet_like_bytes())
    net.layer[3].name = "conv1"
    source = tmp_path / "dup.caffemodel"
    source.write_bytes(net.SerializeToString())
    api.encode(source, tmp_path / "dup.cmps")  # stored losslessly all the same
    api.decode(tmp_path / "dup.cmps", tmp_path / "back.caffemodel")
    assert (tmp_path / "back.caffemodel").read_bytes() == source.read_bytes()
    with pytest.raises(ModelError, match="layer 'conv1': duplicate layer name"):
        api.load_weights(source)
    with pytest.raises(ModelError, match=r"duplicate layer names \['conv1'\]"):
        api.decode(tmp_path / "dup.cmps", tmp_path / "back.h5", format="h5")
    assert not (tmp_path / "back.h5").exists()


def test_hdf5_without_data_group(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5.create_dataset("weights", data=np.zeros(3))
    with pytest.raises(ModelError, match="other.h5: HDF5 file has no 'data' group: not Caffe weights"):
        api.load_model(tmp_path / "other.h5")


def test_hdf5_with_integer_blob(tmp_path):
    with h5py.File(tmp_path / "ints.h5", "w") as h5:
        h5.create_group("data").create_group("conv1").create_dataset("0", data=np.arange(4))
    with pytest.raises(ModelError, match="layer 'conv1' blob 0: dataset of type int64, expected float32 or float64"):
        api.load_model(tmp_path / "ints.h5")


def test_truncated_hdf5(tmp_path):
    with h5py.File(tmp_path / "full.h5", "w") as h5:
        h5.create_group("data").create_group("conv1").create_dataset("0", data=np.ones(100_000))
    data = (tmp_path / "full.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="cut.h5"):
        api.load_model(tmp_path / "cut.h5")


CRASHERS = os.path.join(os.path.dirname(__file__), "fixtures", "crashers")


@pytest.mark.parametrize("name", sorted(os.listdir(CRASHERS)) if os.path.isdir(CRASHERS) else [], ids=lambda name: name)
def test_crasher_corpus(name):
    """Inputs that once made a reader fail badly (found by fuzzing); each must now be a clean error."""
    with open(os.path.join(CRASHERS, name), "rb") as stream:
        data = stream.read()
    if name.startswith("cmps-"):
        assert_rejected(data)
    else:
        path = os.path.join(CRASHERS, name)
        assert_rejected(path, api.load_weights)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_report_refuses_exactly_what_decode_refuses(data):
    """report reads its figures from headers, and decodes too: a payload decode refuses is refused here."""
    from cmpstore.cmps.reader import open_cmps
    from cmpstore.report import build_report

    sections, index = (sections_of(LENET_ANS), ANS_SECTION) if data.draw(st.booleans()) else (sections_of(ZOO), 1)
    kind, payload = sections[index]
    payload = bytearray(payload)
    at = data.draw(st.integers(0, len(payload) - 1))
    payload[at] ^= 1 << data.draw(st.integers(0, 7))
    sections[index] = (kind, bytes(payload))
    mutated = framed(sections)

    def outcome(action):
        try:
            action()
        except CmpstoreError as exc:
            assert "internal error" not in str(exc), str(exc)
            return "refused"
        return "accepted"

    decoded = outcome(lambda: api.decode_bytes(mutated))
    reported = outcome(lambda: build_report(open_cmps(mutated), "mutated.cmps"))
    assert reported == decoded

"""Inputs that once crashed a reader or lost bytes, each now handled; one test per case."""

import numpy as np
import pytest

from cmpstore import api
from cmpstore.caffe import wire
from cmpstore.caffe._proto import caffe_pb2
from cmpstore.errors import FormatError
from cmpstore.streams import ans
from cmpstore.streams.varint import Reader


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


def test_an_ans_stream_whose_last_word_is_zero_is_a_format_error():
    """Once "internal error ... please report it": constriction refuses such words with a ValueError."""
    stream = bytearray(ans.write_stream(np.array([0, 1, 1, 2, 0, 1] * 50)))
    stream[-4:] = b"\0\0\0\0"
    with pytest.raises(FormatError, match="stream: the last coded word is 0, which no encoder writes"):
        ans.read_stream(Reader(bytes(stream)), 3, 300, "stream")


def test_an_unknown_codec_id_names_its_section_and_blob():
    from common import framed

    from cmpstore.cmps import container
    from cmpstore.streams.varint import encode_varint
    from cmpstore.synthetic import build_model

    sections = [(s.kind, bytes(s.payload)) for s in container.read_sections(api.encode(build_model(seed=0)))]
    kind, payload = sections[1]
    reader = Reader(payload)
    head = [reader.varint("field", 1 << 40) for _ in range(6)]
    sections[1] = (kind, b"".join(encode_varint(v) for v in [*head[:4], 77, head[5]]) + payload[reader.pos :])
    out = framed(sections)
    with pytest.raises(FormatError, match=r"x.cmps: section 1 \(BLOB at byte \d+\), layer 'conv1' blob 0: unknown"):
        api.decode_bytes(out, "x.cmps")

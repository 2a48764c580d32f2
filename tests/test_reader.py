"""open_cmps: one handle whose entries every consumer loops over."""

import os

import numpy as np
import pytest
from common import assert_bit_identical
from nets import layer_net_bytes, legacy_net_bytes

from cmpstore import api
from cmpstore.caffe.caffemodel import split_caffemodel
from cmpstore.cmps import container
from cmpstore.cmps.reader import open_cmps
from cmpstore.errors import FormatError
from cmpstore.streams.varint import Reader

MODEL = split_caffemodel(legacy_net_bytes(double=True))
ENCODED = api.encode(split_caffemodel(layer_net_bytes()), coder="ans")


def test_entries_locate_every_blob_section():
    cmps = open_cmps(ENCODED)
    sections = container.read_sections(ENCODED)[1:]
    assert [(e.offset, e.size) for e in cmps.entries] == [(s.offset, s.size_on_disk) for s in sections]
    assert cmps.header_and_net_bytes + sum(e.size for e in cmps.entries) == cmps.size == len(ENCODED)
    assert {e.codec.name for e in cmps.entries} >= {"sparse", "raw"}


def test_decode_decode_into_and_windows_agree():
    cmps = open_cmps(ENCODED)
    model = {p.address: p.values for p in split_caffemodel(layer_net_bytes()).payloads}
    for entry in cmps.entries:
        expected = model[entry.address]
        assert_bit_identical(cmps.decode(entry), expected)
        buffer = np.full(entry.count + 7, np.nan, dtype=entry.dtype)
        cmps.decode_into(entry, buffer, start=5)
        assert_bit_identical(buffer[5 : 5 + entry.count], expected)
        assert np.isnan(buffer[:5]).all() and np.isnan(buffer[5 + entry.count :]).all()
        pieces = [(start, values.copy()) for start, values in cmps.windows(entry, 7)]
        assert [start for start, _ in pieces] == list(range(0, entry.count, 7))
        if pieces:
            assert_bit_identical(np.concatenate([values for _, values in pieces]), expected)


@pytest.mark.parametrize("window", [7, 1 << 16])  # many pieces; one piece per blob
def test_windows_in_a_reused_scratch_buffer_never_show_its_old_bytes(window):
    cmps = open_cmps(ENCODED)
    model = {p.address: p.values for p in split_caffemodel(layer_net_bytes()).payloads}
    scratch = np.full(window * 8, 0xFF, dtype=np.uint8)  # NaN bytes; each blob leaves its own behind
    for entry in cmps.entries:
        pieces = [
            values.copy()
            for _, values in entry.codec.windows(entry.payload, entry.count, entry.dtype, entry.where, window, scratch)
        ]
        if pieces:
            assert_bit_identical(np.concatenate(pieces), model[entry.address])


@pytest.mark.parametrize("codec_name", ["raw", "deflate", "sparse", "sparse-ans"])
def test_every_codec_decodes_into_a_callers_buffer(codec_name):
    from cmpstore.codecs import CODECS

    codec = next(codec() for codec in CODECS.values() if codec.name == codec_name)
    values = np.zeros(300, dtype="<f8")
    values[::7] = np.linspace(-1, 1, values[::7].size)
    out = np.full(300, 9.0)
    assert codec.decode(codec.encode(values), 300, values.dtype, "blob", out=out) is out
    assert_bit_identical(out, values)
    with pytest.raises(ValueError, match="out must be a writable 1-D array of 300 values of float64"):
        codec.decode(codec.encode(values), 300, values.dtype, "blob", out=np.zeros(299))


def test_a_file_is_mapped_and_a_pipe_is_read(tmp_path):
    path = tmp_path / "m.cmps"
    path.write_bytes(api.encode(MODEL))
    mapped = open_cmps(path)
    assert type(mapped.buffer.obj).__name__ == "mmap"
    read, write = os.pipe()
    os.write(write, path.read_bytes())
    os.close(write)
    piped = open_cmps(f"/proc/self/fd/{read}")
    os.close(read)
    assert [piped.decode(e).tobytes() for e in piped.entries] == [mapped.decode(e).tobytes() for e in mapped.entries]


def test_a_cmps_file_closes_its_mapping_at_the_end_of_a_with_block(tmp_path):
    from cmpstore import api
    from cmpstore.cmps.reader import open_cmps
    from cmpstore.synthetic import build_model

    api.encode(build_model(), tmp_path / "m.cmps")
    with open_cmps(tmp_path / "m.cmps") as cmps:
        mapping = cmps._mapping
        copied = cmps.decode(cmps.entries[0]).copy()
        held = cmps.decode(cmps.entries[1])  # a raw blob: a view of the file
    assert cmps.entries == []
    assert copied.size == 500 and held.size == 20  # the view keeps the mapping until it goes
    del held
    with open_cmps(tmp_path / "m.cmps") as cmps:
        mapping = cmps._mapping
    assert mapping.closed


def test_an_unknown_codec_id_names_its_section_and_blob():
    from common import framed

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

"""Files encoded once, decoded on every run: a format change cannot slip in.

One golden file per codec id and per source format (tests/fixtures/golden/,
written by make.py there), each beside the dense caffemodel it must decode to,
byte for byte, and the oldest one, golden-v1.cmps, with the sha256 of its.
All are format version 1 but source-float16 (format version 2), which holds
FLOAT16 raw_data blobs, one per codec, and CaffeOnSpark's source_class (layer
field 141, a string where caffe.proto has bias_param), codec-shuffled-ans
(format version 3, which adds codec 4), source-raw-float (format version 4,
which adds the raw_data of FLOAT and DOUBLE blobs), and codec-segmented (format
version 5, codecs 5 and 6: a blob too large to keep its caffemodel beside it, so
its sha256 is kept).  The encoder, held to the version a file was frozen at,
still writes it byte for byte.
"""

import hashlib
import pathlib

import pytest

from cmpstore import api
from cmpstore.caffe import netproto
from cmpstore.caffe.caffemodel import caffemodel_bytes
from cmpstore.cmps import container
from cmpstore.cmps.reader import open_cmps

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "golden"
# name: (codec of each BLOB section, source format, entropy coder it was written with)
FILES = {
    "codec-raw": (["raw"], "caffemodel", "huffman"),
    "codec-deflate": (["deflate"], "caffemodel", "huffman"),
    "codec-sparse": (["sparse"], "caffemodel", "huffman"),
    "codec-sparse-ans": (["sparse-ans"], "caffemodel", "ans"),
    "source-current": (["sparse", "raw"], "caffemodel", "huffman"),
    "source-legacy-v1": (["sparse", "raw", "sparse", "raw"], "caffemodel", "huffman"),
    "source-float64": (["sparse", "raw", "sparse", "raw"], "caffemodel", "huffman"),
    "source-hdf5": (["sparse", "raw"], "hdf5", "huffman"),
    "source-float16": (["deflate", "raw", "raw", "sparse", "sparse-ans"], "caffemodel", "ans"),
    "codec-shuffled-ans": (["shuffled-ans", "raw"], "caffemodel", "huffman"),
    "source-raw-float": (["sparse", "shuffled-ans", "raw"], "caffemodel", "huffman"),
}
# The format version of each golden file: the lowest that holds it.
VERSIONS = {name: {"source-float16": 2, "codec-shuffled-ans": 3, "source-raw-float": 4}.get(name, 1) for name in FILES}
V1 = FIXTURES / "golden-v1.cmps"
# sha256 of the dense caffemodel encoded into golden-v1.cmps (a seeded two-layer net of
# cmpstore.synthetic, written when the format was frozen).
V1_DECODED_SHA256 = "f852ae98db74c8f044cd271540c1fb89c7eadc51c806401cc132f41a197161c9"


@pytest.mark.parametrize("name", FILES)
def test_golden_file_decodes_to_its_caffemodel(name, tmp_path):
    expected = (GOLDEN / f"{name}.caffemodel").read_bytes()
    assert caffemodel_bytes(api.decode(GOLDEN / f"{name}.cmps")) == expected
    api.decode(GOLDEN / f"{name}.cmps", tmp_path / "streamed.caffemodel")
    assert (tmp_path / "streamed.caffemodel").read_bytes() == expected


@pytest.mark.parametrize("name", FILES)
def test_encoder_still_writes_the_golden_bytes(name):
    golden = (GOLDEN / f"{name}.cmps").read_bytes()
    model = api.decode(GOLDEN / f"{name}.cmps")
    assert api.encode(model, coder=FILES[name][2], max_version=VERSIONS[name]) == golden


@pytest.mark.parametrize("name", FILES)
def test_latest_encoder_departs_from_a_golden_file_only_for_codec_4(name):
    """Unheld, the encoder swaps shuffled deflate for shuffled rANS where that is smaller, and nothing else."""
    golden = (GOLDEN / f"{name}.cmps").read_bytes()
    latest = api.encode(api.decode(GOLDEN / f"{name}.cmps"), coder=FILES[name][2])
    codecs = [section["codec"] for section in api.inspect_bytes(latest)["sections"][1:]]
    frozen = FILES[name][0]
    swapped = [index for index, (old, new) in enumerate(zip(frozen, codecs, strict=True)) if old != new]
    assert all(frozen[index] == "deflate" and codecs[index] == "shuffled-ans" for index in swapped)
    if swapped:
        assert container.read_version(latest)[0] == 3 and len(latest) < len(golden)
    else:
        assert latest == golden
    assert caffemodel_bytes(api.decode_bytes(latest)) == (GOLDEN / f"{name}.caffemodel").read_bytes()


@pytest.mark.parametrize("name", FILES)
def test_golden_file_holds_the_codecs_and_source_it_is_named_for(name):
    info = api.inspect(GOLDEN / f"{name}.cmps")
    codecs, source_format, _ = FILES[name]
    assert [section["codec"] for section in info["sections"][1:]] == codecs
    assert info["sections"][0]["source_format"] == source_format


@pytest.mark.parametrize("name", FILES)
def test_golden_file_has_its_format_version(name):
    assert container.read_version((GOLDEN / f"{name}.cmps").read_bytes())[0] == VERSIONS[name]


def test_float16_golden_file_keeps_a_field_caffe_proto_cannot_parse():
    skeleton = api.decode(GOLDEN / "source-float16.cmps").skeleton
    assert netproto.conflicting_fields(skeleton) == [
        "layer 'data' (#0) field 141 holds length-delimited bytes that do not parse as caffe.proto's bias_param "
        "(a caffe.BiasParameter)"
    ]


def test_float16_golden_file_holds_float16_and_float32_blobs():
    dtypes = [(s["layer"], s["dtype"]) for s in api.inspect(GOLDEN / "source-float16.cmps")["sections"][1:]]
    assert dtypes == [
        ("dense", "float16"),
        ("dense", "float16"),
        ("bn", "float32"),
        ("sparse", "float16"),
        ("skewed", "float16"),
    ]


def test_hdf5_golden_file_decodes_to_hdf5_with_the_same_values(tmp_path):
    api.decode(GOLDEN / "source-hdf5.cmps", tmp_path / "back.caffemodel.h5")
    assert api.verify(GOLDEN / "source-hdf5.cmps", tmp_path / "back.caffemodel.h5") == []
    weights = api.load_weights(tmp_path / "back.caffemodel.h5")
    assert sorted(weights) == ["conv"] and [blob.dtype.name for blob in weights["conv"]] == ["float32", "float64"]


def test_oldest_golden_file_decodes_to_the_same_model():
    model = api.decode_bytes(V1.read_bytes(), str(V1))
    assert hashlib.sha256(caffemodel_bytes(model)).hexdigest() == V1_DECODED_SHA256
    assert api.encode(model) == V1.read_bytes()
    assert [s["codec"] for s in api.inspect(V1)["sections"][1:]] == ["sparse", "raw", "sparse"]


def test_segmented_golden_file_decodes_to_its_caffemodel_in_every_way(tmp_path):
    """Format version 5 (codecs 5 and 6); its 16 MB caffemodel is kept as a sha256."""
    golden = GOLDEN / "codec-segmented.cmps"
    expected = (GOLDEN / "codec-segmented.caffemodel.sha256").read_text().strip()
    model = api.decode(golden)
    assert hashlib.sha256(caffemodel_bytes(model)).hexdigest() == expected
    for workers in (1, 2):
        output = tmp_path / f"streamed-{workers}.caffemodel"
        api.decode(golden, output, workers=workers)
        assert hashlib.sha256(output.read_bytes()).hexdigest() == expected
    assert api.encode(model) == golden.read_bytes()
    assert api.encode(model, max_version=4) != golden.read_bytes()
    assert container.read_version(golden.read_bytes())[0] == 5


def test_segmented_golden_file_holds_codecs_5_and_6():
    with open_cmps(GOLDEN / "codec-segmented.cmps") as cmps:
        weights, bias = cmps.entries
        parts = weights.codec.parts(weights.payload, weights.count, weights.where)
        assert (weights.codec.name, bias.codec.name) == ("segmented", "shuffled-ans")
        assert [(part.count, part.codec.name) for part in parts] == [
            (4_194_304, "sparse-deflate"),
            (2_048, "shuffled-ans"),
        ]

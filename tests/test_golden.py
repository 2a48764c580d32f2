"""A file encoded once by format version 1, decoded on every run: format changes cannot slip in."""

import hashlib
import pathlib

from cmpstore import api
from cmpstore.caffe.caffemodel import caffemodel_bytes

GOLDEN = pathlib.Path(__file__).parent / "fixtures" / "golden-v1.cmps"
# sha256 of the dense caffemodel that was encoded into golden-v1.cmps (a seeded
# two-layer net from cmpstore.synthetic, written when the format was frozen).
DECODED_SHA256 = "f852ae98db74c8f044cd271540c1fb89c7eadc51c806401cc132f41a197161c9"


def test_golden_file_decodes_to_the_same_model():
    model = api.decode_bytes(GOLDEN.read_bytes(), str(GOLDEN))
    assert hashlib.sha256(caffemodel_bytes(model)).hexdigest() == DECODED_SHA256


def test_encoder_still_writes_the_golden_bytes():
    golden = GOLDEN.read_bytes()
    assert api.encode(api.decode_bytes(golden)) == golden


def test_golden_file_reports_its_codecs():
    sections = api.inspect(GOLDEN)["sections"]
    assert [s["codec"] for s in sections[1:]] == ["sparse", "raw", "sparse"]

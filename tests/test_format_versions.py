"""One table says which format version adds what; FORMAT.md, the codecs and the writer agree with it."""

import pathlib
import re

from cmpstore.cmps import container, sections
from cmpstore.codecs import SegmentedCodec, ShuffledAnsCodec, SparseCodec, SparseDeflateCodec
from cmpstore.format_versions import FIRST_VERSION, VERSIONS, Feature

FORMAT_MD = pathlib.Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md"


def test_the_specs_versioning_table_lists_every_version_once():
    versioning = FORMAT_MD.read_text().split("## Versioning", 1)[1]
    rows = [int(number) for number in re.findall(r"^\| (\d+) \|", versioning, flags=re.M)]
    assert tuple(rows) == VERSIONS
    assert set(FIRST_VERSION.values()) | {1} == set(VERSIONS)


def test_every_reader_and_writer_constant_comes_from_the_table():
    assert container.VERSIONS == VERSIONS
    assert ShuffledAnsCodec.format_version == FIRST_VERSION[Feature.SHUFFLED_RANS]
    assert SparseCodec.format_version == 1
    assert SparseDeflateCodec.format_version == FIRST_VERSION[Feature.SPARSE_DEFLATE]
    assert SegmentedCodec.format_version == FIRST_VERSION[Feature.SEGMENTS]
    assert sections.OPAQUE_FIELDS_VERSION == FIRST_VERSION[Feature.OPAQUE_FIELDS]
    assert sections.FLOAT_RAW_DATA_VERSION == FIRST_VERSION[Feature.FLOAT_RAW_DATA]
    assert sections.VALUE_FIELD_VERSIONS[12] == FIRST_VERSION[Feature.FLOAT16_RAW_DATA]


def test_every_row_of_the_specs_limits_table_is_a_constant_of_limits_py():
    from cmpstore import limits

    table = FORMAT_MD.read_text().split("## Limits", 1)[1].split("\n\n", 2)[1]
    rows = dict(re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", table, flags=re.M)[2:])
    assert rows["section payload"].startswith("2^31 − 1") and limits.MAX_SECTION_BYTES == 2**31 - 1
    assert rows["skeleton"] == "2^31 bytes" and limits.MAX_SKELETON_BYTES == 2**31
    assert rows["one blob"].startswith("2^31 bytes") and limits.MAX_BLOB_BYTES == 2**31
    assert rows["layers"].startswith("65,536") and limits.MAX_LAYERS == 65536
    assert rows["fields of the net and its layers"].startswith("1,048,576") and limits.MAX_NET_FIELDS == 2**20
    assert rows["decoded size"].startswith("2^32 bytes") and limits.MAX_TOTAL_BYTES == 2**32
    assert rows["index bits"] == "1 .. 16" and (limits.MIN_INDEX_BITS, limits.MAX_INDEX_BITS) == (1, 16)
    assert rows["codebook"] == "65,536 entries" and limits.MAX_CODEBOOK_ENTRIES == 65536
    assert rows["Huffman code length"] == "20 bits" and limits.MAX_CODE_LENGTH == 20
    assert rows["rANS word / state"] == "32 / 64 bits" and (limits.ANS_WORD_BITS, limits.ANS_STATE_BITS) == (32, 64)
    assert rows["rANS probability precision"].startswith("24 bits") and limits.ANS_PRECISION_BITS == 24
    assert rows["segment"].startswith("65,536 values") and limits.MIN_SEGMENT_VALUES == 65536
    assert len(rows) == 13  # a new row needs its constant here too

"""One table says which format version adds what; FORMAT.md, the codecs and the writer agree with it."""

import pathlib
import re

from cmpstore.cmps import container, sections
from cmpstore.codecs import ShuffledAnsCodec, SparseCodec
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
    assert sections.OPAQUE_FIELDS_VERSION == FIRST_VERSION[Feature.OPAQUE_FIELDS]
    assert sections.FLOAT_RAW_DATA_VERSION == FIRST_VERSION[Feature.FLOAT_RAW_DATA]
    assert sections.VALUE_FIELD_VERSIONS[12] == FIRST_VERSION[Feature.FLOAT16_RAW_DATA]

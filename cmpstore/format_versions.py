"""Which ``.cmps`` format version adds what: the one table that the writer and the reader both read.

docs/FORMAT.md, "Versioning", states the same table.  A writer writes the
lowest version that holds everything in the file
(:func:`cmpstore.cmps.sections.version_for`); a reader refuses a file that
uses a feature its version does not have.  A new feature is a new row here
and in FORMAT.md, with a golden file.
"""

from __future__ import annotations

import enum


class Feature(enum.Enum):
    """What a format version adds to the one before (version 1 is the format without any of these)."""

    FLOAT16_RAW_DATA = "the raw_data of FLOAT16 blobs as float16 values (BLOB value field 12)"
    OPAQUE_FIELDS = "skeleton fields that do not parse as caffe.proto declares them"
    SHUFFLED_RANS = "codec 4, shuffled rANS"
    FLOAT_RAW_DATA = "the raw_data of FLOAT and DOUBLE blobs as values (BLOB value field 12)"
    SPARSE_DEFLATE = "codec 5, sparse with DEFLATE streams"
    SEGMENTS = "codec 6, a blob in segments coded on their own"


#: The first version that holds each feature.
FIRST_VERSION = {
    Feature.FLOAT16_RAW_DATA: 2,
    Feature.OPAQUE_FIELDS: 2,
    Feature.SHUFFLED_RANS: 3,
    Feature.FLOAT_RAW_DATA: 4,
    Feature.SPARSE_DEFLATE: 5,
    Feature.SEGMENTS: 5,
}

#: Every version this cmpstore reads and writes, oldest first.
VERSIONS = tuple(range(1, max(FIRST_VERSION.values()) + 1))


def first_version(feature: Feature) -> int:
    """The first format version that may hold ``feature``."""
    return FIRST_VERSION[feature]

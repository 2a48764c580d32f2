"""The limits on what cmpstore stores and reads, in one place (docs/FORMAT.md, "Limits").

The ``.cmps`` writer refuses a model beyond them and every reader rejects
one, each before it allocates or decodes anything, so that a file the
encoder writes is always one the decoder accepts, and a small hostile file
cannot make a reader allocate, compute or write without bound.  None is near
a real model: VGG-16 has 138 million weights (553 MB), and Caffe itself
cannot read a binary caffemodel over 2 GiB (protobuf's message limit).

This module sits below ``caffe/`` and ``cmps/``, as :mod:`cmpstore.errors`
does, so the Caffe readers, the writer and the reader check the same numbers.
"""

from __future__ import annotations

from numbers import Integral

from .errors import CmpstoreError, UsageError

#: One section's payload: its length field is a u32, kept below 2^31 for every reader's sake.
MAX_SECTION_BYTES = (1 << 31) - 1
#: The weightless NetParameter, and one blob's values: what fits in protobuf's 2 GiB message limit.
MAX_SKELETON_BYTES = 1 << 31
MAX_BLOB_BYTES = 1 << 31
#: Layers of a net (ResNet-152 has about 500), and the fields of the NetParameter and of its
#: layers together: protobuf spends about 700 bytes of memory per parsed layer and 100 per
#: blob, so these are counted on the wire before protobuf parses a skeleton.
MAX_LAYERS = 1 << 16
MAX_NET_FIELDS = 1 << 20
#: A whole model's decoded size: the skeleton plus every blob's values.  Every value takes 2
#: (float16), 4 or 8 bytes, so this also bounds a model's values, to 2^31.
MAX_TOTAL_BYTES = 1 << 32
#: Relative-index widths a sparse blob may use.
MIN_INDEX_BITS = 1
MAX_INDEX_BITS = 16
#: Entries of one blob's codebook; a layer may be shared among at most this many values.
MAX_CODEBOOK_ENTRIES = 1 << 16
#: Values of a segment of a segmented blob (codec 6), but its last: bounds the segments of a blob.
MIN_SEGMENT_VALUES = 1 << 16
#: The longest Huffman code cmpstore writes or accepts (bitarray decodes up to 31).
MAX_CODE_LENGTH = 20
#: rANS streams: constriction's AnsCoder, whose words, state and probability precision these are.
ANS_WORD_BITS = 32
ANS_STATE_BITS = 64
ANS_PRECISION_BITS = 24


def check_blob(count: int, itemsize: int, error: type[CmpstoreError], where: str | None = None) -> None:
    """Raise ``error`` if ``count`` values of ``itemsize`` bytes exceed the limit of one blob."""
    if count * itemsize > MAX_BLOB_BYTES:
        raise error(
            f"{count:,} values of {itemsize} bytes are {count * itemsize:,} bytes, "
            f"more than the {MAX_BLOB_BYTES:,} bytes a blob may hold",
            where=where,
        )


def check_model(decoded_bytes: int, error: type[CmpstoreError], max_output_bytes: int | None = None) -> None:
    """Raise ``error`` if a model that decodes to ``decoded_bytes`` is over the limit.

    ``max_output_bytes``, where given, is the caller's own, lower bound on the decoded size.
    """
    if decoded_bytes > MAX_TOTAL_BYTES:
        raise error(f"the model decodes to {decoded_bytes:,} bytes, more than the limit of {MAX_TOTAL_BYTES:,}")
    check_output(decoded_bytes, error, max_output_bytes)


def check_output(
    decoded_bytes: int, error: type[CmpstoreError], max_output_bytes: int | None, what: str = "the model decodes to"
) -> None:
    """Raise ``error`` if ``decoded_bytes`` exceed the caller's ``max_output_bytes`` (None: no bound)."""
    if max_output_bytes is not None and decoded_bytes > max_output_bytes:
        raise error(f"{what} {decoded_bytes:,} bytes, more than max_output_bytes ({max_output_bytes:,})")


def checked_max_output_bytes(max_output_bytes: object) -> int | None:
    """A caller's bound on the decoded size: None, or a whole number of bytes >= 0."""
    if max_output_bytes is None:
        return None
    if isinstance(max_output_bytes, bool) or not isinstance(max_output_bytes, Integral) or max_output_bytes < 0:
        raise UsageError(f"max_output_bytes must be a whole number of bytes, 0 or more, got {max_output_bytes!r}")
    return int(max_output_bytes)

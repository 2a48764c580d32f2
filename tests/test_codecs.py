import numpy as np
import pytest
from common import assert_codec_roundtrip
from hypothesis import given, settings
from hypothesis import strategies as st

from cmpstore.codecs import (
    RawCodec,
    ShuffledAnsCodec,
    ShuffledDeflateCodec,
    SparseAnsCodec,
    SparseCodec,
    SparseDeflateCodec,
    codec_for_id,
)
from cmpstore.codecs.sparse import MAX_CODEBOOK_ENTRIES
from cmpstore.errors import FormatError

CODECS = [
    RawCodec(),
    ShuffledDeflateCodec(),
    ShuffledDeflateCodec(huffman_only=True),
    ShuffledAnsCodec(),
    SparseCodec(),
    SparseCodec(index_bits=1),
    SparseCodec(index_bits=5),
    SparseAnsCodec(),
    SparseAnsCodec(index_bits=3),
    SparseDeflateCodec(),
    SparseDeflateCodec(index_bits=2),
]
# float16 is the raw_data of FLOAT16 blobs (OpenCV / NVIDIA Caffe); its bit patterns are uint16.
DTYPES = [np.dtype("<f2"), np.dtype("<f4"), np.dtype("<f8")]


def sparse_quantized(size, density, clusters, dtype, seed):
    rng = np.random.default_rng(seed)
    centroids = rng.normal(0, 0.1, clusters).astype(dtype)
    values = np.zeros(size, dtype=dtype)
    where = rng.random(size) < density
    values[where] = centroids[rng.integers(0, clusters, int(where.sum()))]
    return values


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(1, 3000),
    density=st.floats(0.0, 1.0),
    clusters=st.integers(1, 300),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_codec_roundtrips_sparse_quantized_blobs(size, density, clusters, dtype, seed):
    values = sparse_quantized(size, density, clusters, dtype, seed)
    for codec in CODECS:
        assert_codec_roundtrip(codec, values)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: f"{c.name}{getattr(c, 'index_bits', '') or ''}")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "values",
    [
        [],
        [0.0],
        [0.5],
        [0.0] * 1000,
        [-0.0, 0.0, 0.0, -0.0],
        [np.nan, 1.0, -np.inf, np.inf],
        [0.0] * 100_000 + [3.0],  # one gap far beyond any index width
        [1e-45, -1e-45, 0.0],  # subnormals
    ],
    ids=["empty", "one-zero", "one-weight", "all-zero", "negative-zero", "nan-inf", "long-gap", "subnormal"],
)
def test_edge_cases(codec, dtype, values):
    assert_codec_roundtrip(codec, np.array(values, dtype=dtype))


def test_nan_payload_survives():
    values = np.array([0x7FC00001, 0xFFC12345, 0], dtype="<u4").view("<f4")
    for codec in CODECS:
        assert_codec_roundtrip(codec, values)


def test_float16_nan_payloads_and_negative_zero_survive():
    values = np.array([0x7E01, 0xFD23, 0x8000, 0, 0x0001, 0x3C00], dtype="<u2").view("<f2")
    for codec in CODECS:
        assert_codec_roundtrip(codec, values)


def test_every_float16_bit_pattern_fits_one_codebook():
    # 65,535 nonzero patterns and no filler: the largest codebook a float16 blob can need.
    values = np.arange(1, 1 << 16, dtype="<u2").view("<f2")
    payload = assert_codec_roundtrip(SparseCodec(), values)
    stats = SparseCodec().describe(payload, values.size, values.dtype, "blob")
    assert stats.distinct == (1 << 16) - 1


def test_float16_codebook_patterns_beyond_16_bits_are_rejected():
    # A float32 codebook read back as a float16 blob's: 0.5 is the pattern 0x3F000000.
    payload = SparseCodec().encode(np.full(50, 0.5, dtype="<f4"))
    with pytest.raises(FormatError, match="blob codebook is 1056964608, more than the allowed 65536"):
        SparseCodec().decode(payload, 50, np.dtype("<f2"), "blob")


def test_dense_unquantized_blob_uses_raw_values():
    values = np.random.default_rng(1).normal(size=MAX_CODEBOOK_ENTRIES + 10).astype("<f4")
    stats = SparseCodec().describe(SparseCodec().encode(values), values.size, values.dtype, "blob")
    assert stats.codebook_entries is None
    assert "raw values" in stats.note
    assert_codec_roundtrip(SparseCodec(), values)


def test_fixed_index_bits_are_used():
    values = sparse_quantized(5000, 0.05, 16, np.dtype("<f4"), 3)
    stats = SparseCodec(index_bits=3).describe(SparseCodec(index_bits=3).encode(values), 5000, values.dtype, "b")
    assert stats.index_bits == 3
    assert stats.fillers > 0


def test_chosen_index_bits_beat_every_fixed_width():
    values = sparse_quantized(200_000, 0.04, 32, np.dtype("<f4"), 4)
    chosen = len(SparseCodec().encode(values))
    assert all(chosen <= len(SparseCodec(index_bits=b).encode(values)) for b in range(1, 17))


def test_unknown_codec_id():
    with pytest.raises(FormatError, match="unknown blob codec id 9"):
        codec_for_id(9)


def sparse_payload(values):
    return bytearray(SparseCodec().encode(values))


def test_sparse_rejects_entries_beyond_the_blob():
    values = sparse_quantized(100, 0.5, 4, np.dtype("<f4"), 5)
    payload = SparseCodec().encode(values)
    with pytest.raises(FormatError):
        SparseCodec().decode(payload, 50, values.dtype, "blob")


def test_sparse_rejects_trailing_bytes():
    values = sparse_quantized(100, 0.5, 4, np.dtype("<f4"), 6)
    with pytest.raises(FormatError, match="trailing bytes"):
        SparseCodec().decode(SparseCodec().encode(values) + b"\0", 100, values.dtype, "blob")


def test_deflate_rejects_wrong_length():
    values = np.arange(10, dtype="<f4")
    with pytest.raises(FormatError, match="blob deflate stream: the zlib stream does not hold exactly 44 bytes"):
        ShuffledDeflateCodec().decode(ShuffledDeflateCodec().encode(values), 11, values.dtype, "blob")


def test_raw_rejects_wrong_length():
    with pytest.raises(FormatError, match="expected 12"):
        RawCodec().decode(b"\0" * 8, 3, np.dtype("<f4"), "blob")

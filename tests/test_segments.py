"""Format version 5: the sparse codec with DEFLATE streams (codec 5) and segmented blobs (codec 6).

Both exist so that large blobs decode fast; these tests hold them to the
spec (docs/FORMAT.md, "codec 5" and "codec 6"), to the writer's rule of when
it uses them, and to what every reader refuses.
"""

import io
import zlib

import numpy as np
import pytest
from common import assert_bit_identical, assert_codec_roundtrip, framed, run_cli

from cmpstore import api
from cmpstore.caffe.caffemodel import caffemodel_bytes
from cmpstore.cmps import container, writer
from cmpstore.cmps.dense_writer import write_caffemodel
from cmpstore.cmps.reader import open_cmps
from cmpstore.codecs import RawCodec, SegmentedCodec, ShuffledDeflateCodec, SparseCodec, SparseDeflateCodec
from cmpstore.codecs.segmented import SEGMENT_VALUES
from cmpstore.errors import FormatError
from cmpstore.limits import MIN_SEGMENT_VALUES
from cmpstore.streams import ans
from cmpstore.streams.varint import Reader, encode_varint
from cmpstore.synthetic import LayerSpec, build_model, pruned_quantized


def sparse_values(size, density=0.02, clusters=16, seed=0):
    return pruned_quantized((size,), density, clusters, np.random.default_rng(seed)).astype("<f4")


def smallest(run):
    """The writer's choice for a segment, in little: the smaller of sparse and raw."""
    return min(((codec, codec.encode(run)) for codec in (SparseCodec(), RawCodec())), key=lambda pair: len(pair[1]))


# --- codec 5 -------------------------------------------------------------------------------------


def test_sparse_deflate_keeps_indices_and_codebooks_within_a_byte():
    values = np.zeros(50_000, dtype="<f4")
    values[::5] = np.arange(1, 10_001) % 300 + 1  # 300 distinct values: more than a byte can index
    payload = assert_codec_roundtrip(SparseDeflateCodec(), values)
    stats = SparseDeflateCodec().describe(payload, values.size, values.dtype, "blob")
    assert stats.index_bits <= 8 and stats.codebook_entries is None  # raw values, not a codebook
    with pytest.raises(ValueError, match="1..8"):
        SparseDeflateCodec(index_bits=9)


def test_sparse_deflate_is_within_a_percent_of_huffman_on_a_large_pruned_blob():
    values = sparse_values(1 << 20)
    huffman = len(SparseCodec().encode(values))
    deflate = len(SparseDeflateCodec().encode(values))
    assert deflate <= huffman * 1.01


def deflate_stream(symbols: bytes, *, trailing: bytes = b"") -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = compressor.compress(symbols) + compressor.flush() + trailing
    return encode_varint(len(data)) + data


def sparse_deflate_payload(gaps: bytes, symbols: bytes, codebook=(0x3F800000,), index_bits=4, entries=None):
    """A codec 5 payload from its parts: header, index stream, codebook, weight stream."""
    entries = len(gaps) if entries is None else entries
    head = b"".join(encode_varint(v) for v in (index_bits, entries, 0, 0))
    book = encode_varint(len(codebook)) + encode_varint(codebook[0])
    for previous, pattern in zip(codebook, codebook[1:], strict=False):
        book += encode_varint(pattern - previous - 1)
    return head + deflate_stream(gaps) + book + deflate_stream(symbols)


def test_sparse_deflate_decodes_any_valid_deflate_data_not_only_huffman_only_blocks():
    payload = sparse_deflate_payload(bytes([1, 1, 1, 1]), bytes(4))  # zlib's default strategy: matches too
    values = SparseDeflateCodec().decode(payload, 6, np.dtype("<f4"), "blob")
    assert values.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "payload, problem",
    [
        (sparse_deflate_payload(bytes([1, 1, 20]), bytes(3)), "outside the alphabet of 16"),
        (sparse_deflate_payload(bytes([1, 1]), bytes(2), entries=3), "does not hold exactly 3 bytes"),
        (sparse_deflate_payload(bytes([1, 1, 1]), bytes([0, 0, 1])), "outside the alphabet of 1"),
        (sparse_deflate_payload(bytes([1]), bytes(1), index_bits=9), "index bits"),
        (sparse_deflate_payload(bytes([1]), bytes(1), codebook=tuple(range(257))), "codebook size"),
    ],
    ids=["gap beyond the index width", "too few symbols", "index beyond the codebook", "9-bit index", "257 entries"],
)
def test_sparse_deflate_refuses(payload, problem):
    with pytest.raises(FormatError, match=problem):
        SparseDeflateCodec().decode(payload, 100, np.dtype("<f4"), "blob")


def test_sparse_deflate_refuses_bytes_after_the_final_block_and_corrupt_data():
    after = bytes(sparse_deflate_payload(bytes([1]), bytes(1)))
    head = b"".join(encode_varint(v) for v in (4, 1, 0, 0))
    with_trailing = head + deflate_stream(bytes([1]), trailing=b"\0") + after[len(head) + 3 :]
    with pytest.raises(FormatError, match="exactly 1 bytes"):
        SparseDeflateCodec().decode(with_trailing, 10, np.dtype("<f4"), "blob")
    corrupt = head + encode_varint(3) + b"\xff\xff\xff" + after[len(head) + 3 :]
    with pytest.raises(FormatError, match="corrupt DEFLATE data"):
        SparseDeflateCodec().decode(corrupt, 10, np.dtype("<f4"), "blob")


# --- codec 6 -------------------------------------------------------------------------------------


def test_segments_cover_the_blob_in_order_each_with_its_own_codec():
    values = sparse_values(3 * MIN_SEGMENT_VALUES + 5)
    values[MIN_SEGMENT_VALUES : 2 * MIN_SEGMENT_VALUES] = np.random.default_rng(1).normal(size=MIN_SEGMENT_VALUES)
    codec = SegmentedCodec(MIN_SEGMENT_VALUES, smallest)
    payload = assert_codec_roundtrip(codec, values)
    parts = codec.parts(payload, values.size, "blob")
    assert [(part.start, part.count, part.codec.name) for part in parts] == [
        (0, MIN_SEGMENT_VALUES, "sparse"),
        (MIN_SEGMENT_VALUES, MIN_SEGMENT_VALUES, "raw"),
        (2 * MIN_SEGMENT_VALUES, MIN_SEGMENT_VALUES, "sparse"),
        (3 * MIN_SEGMENT_VALUES, 5, "sparse"),
    ]
    windows = np.concatenate([piece.copy() for _, piece in codec.windows(payload, values.size, values.dtype, "b", 999)])
    assert_bit_identical(windows, values)
    positions, entries = codec.decode_entries(payload, values.size, values.dtype, "blob")
    dense = np.zeros_like(values)
    dense[positions] = entries
    assert_bit_identical(dense, values)
    stats = codec.describe(payload, values.size, values.dtype, "blob")
    assert stats.distinct == np.unique(values[values != 0]).size
    assert stats.codec == "segmented (4 x raw + sparse)"


def segmented_payload(segment_values, segments, trailing=b""):
    out = encode_varint(segment_values)
    for codec_id, body in segments:
        out += encode_varint(codec_id) + encode_varint(len(body)) + body
    return out + trailing


ZEROS = bytes(SparseCodec().encode(np.zeros(MIN_SEGMENT_VALUES, "<f4")))


@pytest.mark.parametrize(
    "payload, problem",
    [
        (segmented_payload(MIN_SEGMENT_VALUES - 1, [(2, ZEROS)] * 3), "fewer than 65536"),
        (segmented_payload(2 * MIN_SEGMENT_VALUES, [(2, ZEROS)]), "segment values"),
        (segmented_payload(MIN_SEGMENT_VALUES, [(2, ZEROS), (6, ZEROS)]), "cannot itself be segmented"),
        (segmented_payload(MIN_SEGMENT_VALUES, [(2, ZEROS), (7, ZEROS)]), "unknown blob codec id 7"),
        (segmented_payload(MIN_SEGMENT_VALUES, [(2, ZEROS)]), "segment 1 codec"),
        (segmented_payload(MIN_SEGMENT_VALUES, [(2, ZEROS)] * 2, b"\0"), "trailing bytes"),
        (segmented_payload(MIN_SEGMENT_VALUES, [(2, ZEROS), (0, b"\0" * 7)]), "raw payload of 7 bytes"),
    ],
    ids=["short segments", "one segment", "nested", "unknown codec", "missing segment", "trailing", "bad segment"],
)
def test_segmented_payload_refuses(payload, problem):
    count = 2 * MIN_SEGMENT_VALUES
    with pytest.raises(FormatError, match=problem):
        SegmentedCodec().decode(payload, count, np.dtype("<f4"), "blob")


def test_a_segment_length_beyond_the_payload_is_refused_before_anything_is_read():
    payload = encode_varint(MIN_SEGMENT_VALUES) + encode_varint(2) + encode_varint(1 << 40)
    with pytest.raises(FormatError, match="segment 0 length"):
        SegmentedCodec().parts(payload, 2 * MIN_SEGMENT_VALUES, "blob")


# --- the writer and the reader --------------------------------------------------------------------


@pytest.fixture(scope="module")
def large_model():
    """One fc layer a little over a segment: its last row dense, the rest pruned and shared."""
    model = build_model((LayerSpec("fc", "InnerProduct", (2049, 2048), 0.02, 16),), seed=3)
    weights = model.payloads[0].values
    weights[-2048:] = np.random.default_rng(3).normal(0, 0.1, 2048)
    return model


def test_a_large_blob_is_segmented_with_deflate_streams_in_format_version_5(large_model):
    assert large_model.payloads[0].values.size > SEGMENT_VALUES
    encoded = api.encode(large_model)
    cmps = open_cmps(encoded)
    assert cmps.version == 5
    weights = cmps.entries[0]
    assert weights.codec.name == "segmented"
    assert [part.codec.name for part in weights.codec.parts(weights.payload, weights.count, "fc")] == [
        "sparse-deflate",
        "shuffled-ans",
    ]
    assert caffemodel_bytes(cmps.model()) == caffemodel_bytes(large_model)


def test_held_to_version_4_the_writer_uses_neither_codec_5_nor_6(large_model):
    latest, held = api.encode(large_model), api.encode(large_model, max_version=4)
    cmps = open_cmps(held)
    assert cmps.version < 5 and {entry.codec.name for entry in cmps.entries} <= {"sparse", "shuffled-ans", "raw"}
    # At most what version 5's DEFLATE streams cost; here its segments save more (the dense row is coded apart).
    assert len(latest) <= len(held) * 1.01
    assert caffemodel_bytes(cmps.model()) == caffemodel_bytes(large_model)


def test_smallest_keeps_every_segments_smallest_coding(large_model):
    smallest = open_cmps(api.encode(large_model, smallest=True))
    weights = smallest.entries[0]
    assert [part.codec.name for part in weights.codec.parts(weights.payload, weights.count, "fc")] == [
        "sparse",
        "shuffled-ans",
    ]
    assert smallest.size < len(api.encode(large_model))


def test_deflate_streams_are_kept_only_within_the_slack(monkeypatch):
    values = sparse_values(writer.FAST_SPARSE_VALUES)
    latest = container.VERSIONS[-1]
    choice = writer._Choice.for_version("huffman", latest)
    assert choice.blob(values, None)[0].name == "sparse-deflate"
    assert choice.blob(values[:-1], None)[0].name == "sparse"  # below FAST_SPARSE_VALUES: the smallest
    assert choice.blob(values, 9)[0].name == "sparse"  # a fixed width beyond 8 bits
    assert writer._Choice.for_version("huffman", 4).blob(values, None)[0].name == "sparse"
    assert writer._Choice.for_version("huffman", latest, smallest=True).blob(values, None)[0].name == "sparse"
    # At a million values the DEFLATE streams are the larger (at 65,536 their block headers can
    # cost less than codec 2's tables), so they are kept only for the slack.
    monkeypatch.setattr(writer, "FAST_DECODE_SLACK", -0.01)  # now it would have to be smaller
    assert choice.blob(sparse_values(1 << 20), None)[0].name == "sparse"


def test_dense_floats_keep_the_fastest_coding_within_the_slack(monkeypatch):
    rng = np.random.default_rng(7)
    normal = rng.normal(0, 0.05, 1 << 18)
    # Skewed a little, as trained weights are: rANS then saves 0.3% of the third plane, as on the NSFW ResNet.
    normal = (np.sign(normal) * np.abs(normal) ** 0.7 * 0.05**0.3).astype("<f4")
    choice = writer._Choice.for_version("huffman", 4)  # no version 5 codec is involved

    def plane_codings(codec_and_payload):
        codec, payload = codec_and_payload
        assert codec.name == "shuffled-ans"
        reader, codings = Reader(payload), []
        for _ in range(4):
            codings.append(reader.varint("coding", 1))
            if codings[-1] == 0:
                reader.take(normal.size, "plane")
            else:
                ans.skip_stream(reader, 256, normal.size, "plane")
        return codings

    smallest = writer._Choice.for_version("huffman", 4, smallest=True).blob(normal, None)
    assert plane_codings(smallest) == [0, 0, 1, 1]
    # First choice: shuffled deflate of Huffman codes only, which zlib inflates.
    fastest = choice.blob(normal, None)
    assert (fastest[0].name, fastest[0].huffman_only) == ("deflate", True)
    assert len(smallest[1]) < len(fastest[1]) <= len(smallest[1]) * 1.01
    # Were deflate beyond the slack: rANS, storing the third plane (it shrinks by well under 1%).
    real_encode = ShuffledDeflateCodec.encode
    monkeypatch.setattr(ShuffledDeflateCodec, "encode", lambda self, values: real_encode(self, values) * 2)
    assert plane_codings(choice.blob(normal, None)) == [0, 0, 0, 1]
    noise = rng.integers(0, 2**32, writer.FAST_DENSE_VALUES, dtype=np.uint32).view("<f4")
    assert choice.blob(noise, None)[0].name == "raw"
    monkeypatch.setattr(writer, "FAST_DECODE_SLACK", 0.0)
    assert plane_codings(choice.blob(normal, None)) == [0, 0, 1, 1]


def test_a_version_4_file_may_not_hold_codecs_5_or_6(large_model):
    encoded = api.encode(large_model)
    sections = container.read_sections(encoded)
    relabelled = framed([(section.kind, bytes(section.payload)) for section in sections], version=4)
    with pytest.raises(FormatError, match="codec 6 .segmented. needs format version 5"):
        open_cmps(relabelled)


@pytest.mark.parametrize("workers", [1, 2])
def test_segments_decode_in_parallel_to_the_same_bytes(large_model, tmp_path, workers):
    cmps = open_cmps(api.encode(large_model))
    lines = []
    output = tmp_path / "out.caffemodel"
    write_caffemodel(cmps, output, workers=workers, progress=lambda label, detail: lines.append(label))
    assert output.read_bytes() == caffemodel_bytes(large_model)
    assert sorted(lines) == ["fc blob 0 part 1/2", "fc blob 0 part 2/2", "fc blob 1"]


def test_sparse_matrix_of_a_segmented_blob(large_model):
    scipy = pytest.importorskip("scipy")
    del scipy
    from cmpstore.sparse_matrix import csr_from_cmps

    cmps = open_cmps(api.encode(large_model))
    matrix = csr_from_cmps(cmps, "fc", 0)
    assert_bit_identical(matrix.toarray().reshape(-1), large_model.payloads[0].values)


def test_shuffled_deflate_segments_too():
    values = np.random.default_rng(5).normal(size=MIN_SEGMENT_VALUES + 1).astype("<f4")
    codec = SegmentedCodec(MIN_SEGMENT_VALUES, lambda run: (ShuffledDeflateCodec(), ShuffledDeflateCodec().encode(run)))
    assert_codec_roundtrip(codec, values)


def test_encode_and_compress_take_smallest(large_model, tmp_path):
    source = tmp_path / "large.caffemodel"
    api.save_model(large_model, source)
    for smallest in (False, True):
        output = tmp_path / f"smallest-{smallest}.cmps"
        code, _, errors = run_cli("encode", source, "-o", output, "-q", *(["--smallest"] if smallest else []))
        assert code == 0, errors
        with open_cmps(output) as cmps:
            weights = cmps.entries[0]
            codecs = [part.codec.name for part in weights.codec.parts(weights.payload, weights.count, "fc")]
        assert codecs[0] == ("sparse" if smallest else "sparse-deflate")
    compressed = tmp_path / "compressed.cmps"
    code, _, errors = run_cli(
        "compress", source, "-o", compressed, "--ratios", "fc=0.5", "--clusters", "fc=16", "--smallest", "-q"
    )
    assert code == 0, errors
    with open_cmps(compressed) as cmps:
        weights = cmps.entries[0]
        assert {part.codec.name for part in weights.codec.parts(weights.payload, weights.count, "fc")} <= {
            "sparse",
            "shuffled-ans",
        }


def test_encode_writes_a_file_section_by_section_with_the_header_it_needs_last(large_model, tmp_path):
    """The header first says the version the model needs (1), then, once fc's segments made it 5, says 5."""
    writes = []

    class Recording(io.BytesIO):
        def write(self, data):
            writes.append(len(data))
            return super().write(data)

    stream = Recording()
    size = writer.write_model(large_model, stream)
    assert stream.getvalue() == api.encode(large_model) and size == len(stream.getvalue())
    assert container.read_version(stream.getvalue())[0] == 5
    # The header, the net, each blob's section as it is coded, then the header again: never the file whole.
    assert len(writes) == 5 and writes[0] == writes[-1] == container.HEADER_SIZE
    assert api.encode(large_model, tmp_path / "large.cmps") is None
    assert (tmp_path / "large.cmps").read_bytes() == stream.getvalue()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_segmented_blob_decodes_into_memory_in_process_and_in_workers(large_model, workers):
    from cmpstore.cmps import dense_writer

    cmps = open_cmps(api.encode(large_model))
    if workers > 1 and not hasattr(dense_writer.os, "memfd_create"):
        pytest.skip("decoding in workers into memory needs memfd")
    expected = caffemodel_bytes(large_model)
    assert dense_writer.caffemodel_buffer(cmps, workers=workers).tobytes() == expected

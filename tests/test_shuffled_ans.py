"""Codec 4, shuffled rANS (format version 3): byte planes, each stored or rANS coded.

Round trips of every value size and edge case are in test_codecs.py, beside
the other codecs; this file holds what is particular to codec 4: how it
chooses per plane, what it refuses, and the format version it takes.
"""

import lzma
import pathlib

import numpy as np
import pytest
from common import framed

from cmpstore import api, cli
from cmpstore.cmps import container
from cmpstore.codecs import ShuffledAnsCodec, ShuffledDeflateCodec
from cmpstore.codecs.shuffled_ans import RANS, STORED
from cmpstore.errors import FormatError, ModelError, UsageError
from cmpstore.streams import ans
from cmpstore.streams.varint import Reader, encode_varint
from cmpstore.synthetic import LayerSpec, build_model

CODEC = ShuffledAnsCodec()
FLOAT16_MODEL = pathlib.Path(__file__).parent / "fixtures" / "golden" / "source-float16.caffemodel"
F4 = np.dtype("<f4")


def plane_codings(payload: bytes, count: int, itemsize: int) -> list[int]:
    """How each plane of a payload is coded, read with the layout of docs/FORMAT.md (codec 4)."""
    reader, codings = Reader(payload), []
    for _ in range(itemsize):
        codings.append(reader.varint("coding", 1))
        if codings[-1] == STORED:
            reader.take(count, "stored plane")
        else:
            ans.skip_stream(reader, 256, count, "plane")
    reader.expect_end("payload")
    return codings


def dense_weights(count: int, dtype: str = "<f4", seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.02, count).astype(dtype)


def test_a_random_plane_is_stored_and_a_skewed_one_rans_coded():
    values = dense_weights(4000)
    payload = CODEC.encode(values)
    # float32 normal(0, 0.02): the three mantissa bytes are close to random (byte 2 holds one exponent
    # bit and the top seven mantissa bits); only the sign/exponent byte is skewed enough to pay.
    assert plane_codings(payload, values.size, 4) == [STORED, STORED, STORED, RANS]
    assert CODEC.decode(payload, values.size, F4, "blob").tobytes() == values.tobytes()


def test_float16_dense_weights_come_within_one_percent_of_their_planes_entropy():
    values = dense_weights(50_000, "<f2")
    planes = values.view(np.uint8).reshape(-1, 2).T
    entropy = 0.0
    for plane in planes:
        p = np.bincount(plane, minlength=256) / plane.size
        entropy += min(plane.size, -(p[p > 0] * np.log2(p[p > 0])).sum() * plane.size / 8)
    assert entropy <= len(CODEC.encode(values)) < 1.01 * entropy


def test_smaller_than_shuffled_deflate_and_xz_on_dense_weights():
    values = dense_weights(20_000, seed=1)
    coded = len(CODEC.encode(values))
    assert coded < len(ShuffledDeflateCodec().encode(values))
    assert coded < len(lzma.compress(values.tobytes(), preset=6))


def test_a_plane_of_one_byte_value_costs_a_few_bytes():
    values = np.full(10_000, 0.5, dtype=F4)  # 0x3F000000: every plane a single symbol
    payload = CODEC.encode(values)
    assert plane_codings(payload, values.size, 4) == [RANS] * 4 and len(payload) < 40
    assert CODEC.decode(payload, values.size, F4, "blob").tobytes() == values.tobytes()


def test_decodes_into_a_callers_buffer():
    values = dense_weights(1000, "<f8")
    out = np.empty(1000, dtype="<f8")
    assert CODEC.decode(CODEC.encode(values), 1000, values.dtype, "blob", out=out) is out
    assert out.tobytes() == values.tobytes()


@pytest.mark.parametrize(
    "payload, count, message",
    [
        (encode_varint(2) + bytes(3), 3, "byte plane 0 coding"),
        (encode_varint(STORED) + bytes(2), 3, "byte plane 0 stored bytes needs 3 bytes"),
        (encode_varint(STORED) + bytes(3) + encode_varint(STORED) + bytes(3), 3, "byte plane 2 coding"),
        (b"".join(encode_varint(STORED) + bytes(3) for _ in range(4)) + b"\0", 3, "1 unexpected trailing bytes"),
        (encode_varint(RANS) + encode_varint(0), 0, "must use at least one symbol"),
        (encode_varint(RANS) + ans.write_stream(np.array([0, 1, 0, 1, 0])), 3, "do not add up"),
        (encode_varint(RANS) + ans.write_stream(np.array([256, 1])), 2, "symbol"),
    ],
    ids=["unknown-coding", "short-plane", "missing-plane", "trailing", "empty-rans", "wrong-count", "not-a-byte"],
)
def test_malformed_payloads_are_refused_naming_the_plane(payload, count, message):
    with pytest.raises(FormatError, match=message):
        CODEC.decode(payload, count, F4, "blob")


def dense_model():
    return build_model((LayerSpec("c", "Convolution", (16, 4, 3, 3), 1.0, None, bias=False),), seed=2)


def test_a_file_with_codec_4_is_format_version_3_and_decodes_bit_for_bit():
    model = dense_model()
    encoded = api.encode(model)
    assert container.read_version(encoded)[0] == 3
    assert [s["codec"] for s in api.inspect_bytes(encoded)["sections"][1:]] == ["shuffled-ans"]
    assert api.decode_bytes(encoded).payloads[0].values.tobytes() == model.payloads[0].values.tobytes()


@pytest.mark.parametrize("version", [1, 2])
def test_an_earlier_version_file_holding_codec_4_is_refused(version):
    sections = [(s.kind, bytes(s.payload)) for s in container.read_sections(api.encode(dense_model()))]
    message = str(pytest.raises(FormatError, api.decode_bytes, framed(sections, version)).value)
    assert f"codec 4 (shuffled-ans) needs format version 3, but the file is version {version}" in message
    assert "section 1" in message and "layer 'c'" in message


@pytest.mark.parametrize("version, codec", [(1, "deflate"), (2, "deflate"), (3, "shuffled-ans")])
def test_max_version_keeps_out_the_codecs_of_later_versions(version, codec):
    encoded = api.encode(dense_model(), max_version=version)
    assert container.read_version(encoded)[0] == 1 if version < 3 else 3
    assert [s["codec"] for s in api.inspect_bytes(encoded)["sections"][1:]] == [codec]


def test_max_version_below_what_the_model_needs_is_an_error_naming_why():
    float16 = api.load_model(FLOAT16_MODEL)
    with pytest.raises(ModelError, match="float16 raw_data blobs, which need format version 2, not 1"):
        api.encode(float16, max_version=1)


@pytest.mark.parametrize("version", [0, 6, "3", 2.0])
def test_an_unknown_max_version_is_a_usage_error(version):
    with pytest.raises(UsageError, match="unknown format version"):
        api.encode(dense_model(), max_version=version)


def test_cli_max_format_version(tmp_path, capsys):
    source = tmp_path / "dense.caffemodel"
    api.save_model(dense_model(), source)
    assert cli.main(["encode", str(source), "-o", str(tmp_path / "v2.cmps"), "--max-format-version", "2"]) == 0
    assert container.read_version((tmp_path / "v2.cmps").read_bytes())[0] == 1
    assert cli.main(["encode", str(source), "-o", str(tmp_path / "v3.cmps")]) == 0
    assert container.read_version((tmp_path / "v3.cmps").read_bytes())[0] == 3
    status = cli.main(["encode", str(FLOAT16_MODEL), "-o", str(tmp_path / "f.cmps"), "--max-format-version", "1"])
    assert status == 2 and not (tmp_path / "f.cmps").exists()
    assert f"{FLOAT16_MODEL}: the model holds float16 raw_data blobs" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", ["<f2", "<f4", "<f8"])
def test_the_spec_alone_decodes_codec_4(dtype):
    """docs/FORMAT.md's codec 4 with the reference rANS decoder (tests/spec), no cmpstore decoder."""
    from spec import reference_ans

    values = dense_weights(3000, dtype, seed=5)
    values[:7] = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45, 0.5]
    reader, planes = Reader(CODEC.encode(values)), []
    for _ in range(values.dtype.itemsize):
        if reader.varint("coding", 1) == STORED:
            planes.append(np.frombuffer(reader.take(values.size, "plane"), dtype=np.uint8))
            continue
        used = np.array(reader.ascending(reader.varint("U", 256), 256, "symbols"))
        counts = [reader.varint("count", values.size) for _ in used]
        words = reader.array(reader.varint("W", 1 << 30), np.dtype("<u4"), "words")
        dense = reference_ans.decode_words(np.asarray(words, dtype=np.uint32), counts, values.size)
        planes.append(used[np.asarray(dense)].astype(np.uint8))
    reader.expect_end("payload")
    assert np.stack(planes, axis=1).tobytes() == values.tobytes()


def test_streams_decode_in_chunks_to_the_same_values(monkeypatch):
    from cmpstore.streams import ans

    values = np.random.default_rng(5).normal(0, 0.05, 10_001).astype(np.float32)
    codec = ShuffledAnsCodec()
    payload = codec.encode(values)
    whole = codec.decode(payload, values.size, values.dtype, "blob")
    monkeypatch.setattr(ans, "DECODE_CHUNK", 7)
    assert codec.decode(payload, values.size, values.dtype, "blob").tobytes() == whole.tobytes() == values.tobytes()


def test_decoding_needs_little_beyond_its_output():
    """A codec-4 blob of 8M float32 values: the peak is the 32 MiB output and a few MiB, not an int32 per symbol."""
    import tracemalloc

    count = 1 << 23
    values = np.zeros(count, dtype=np.float32)
    values[::3] = 0.5  # skewed planes, so each is rANS coded, not stored
    codec = ShuffledAnsCodec()
    payload = codec.encode(values)
    tracemalloc.start()
    try:
        decoded = codec.decode(payload, count, values.dtype, "blob")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded.tobytes() == values.tobytes()
    assert peak < decoded.nbytes + (24 << 20), f"peak {peak:,} B for {decoded.nbytes:,} B of output"

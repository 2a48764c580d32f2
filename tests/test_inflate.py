"""Bounded inflation and checksums: ISA-L where installed, zlib otherwise, and the same answers from both."""

import zlib

import numpy as np
import pytest

from cmpstore.errors import FormatError
from cmpstore.streams import inflate, zlib_backend

isal_zlib = pytest.importorskip("isal.isal_zlib", reason="python-isal is not installed here")

DATA = np.random.default_rng(0).bytes(3000) + bytes(range(256)) * 400


def deflated(data: bytes, raw: bool) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, inflate.RAW_DEFLATE if raw else zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.fixture(params=["isal", "zlib"])
def inflater(request, monkeypatch):
    monkeypatch.setattr(zlib_backend, "inflater", isal_zlib if request.param == "isal" else zlib)
    return request.param


def test_isal_is_the_backend_where_installed():
    assert zlib_backend.inflater is isal_zlib
    data = DATA * 3
    assert zlib_backend.crc32(data) == zlib.crc32(data)
    assert zlib_backend.crc32(data[7:], zlib_backend.crc32(data[:7])) == zlib.crc32(data)


@pytest.mark.parametrize("raw", [True, False])
def test_either_inflater_gives_the_bytes(inflater, raw):
    assert inflate.inflate_exactly(deflated(DATA, raw), len(DATA), "blob", raw=raw) == DATA


def _damaged(stream: bytes, how: str) -> bytes:
    if how == "truncated":
        return stream[:-7]
    if how == "trailing":
        return stream + b"\0\1"
    flipped = bytearray(stream)
    flipped[len(stream) // 2] ^= 0x5A
    flipped[-1] ^= 0x01  # the Adler-32 too, where there is one
    return bytes(flipped)


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("how", ["truncated", "trailing", "corrupt", "longer", "shorter"])
def test_either_inflater_refuses_the_same_damage(inflater, raw, how):
    stream, size = deflated(DATA, raw), len(DATA)
    if how == "longer":
        size += 1
    elif how == "shorter":
        size -= 1
    else:
        stream = _damaged(stream, how)
    with pytest.raises(FormatError, match="^blob: "):
        inflate.inflate_exactly(stream, size, "blob", raw=raw)

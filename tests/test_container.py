import struct
import zlib

import pytest
from nets import lenet_like_bytes

from cmpstore import api
from cmpstore.caffe.caffemodel import split_caffemodel
from cmpstore.cmps import container
from cmpstore.errors import FormatError
from cmpstore.synthetic import LayerSpec, build_model


@pytest.fixture(scope="module")
def encoded() -> bytes:
    return api.encode(split_caffemodel(lenet_like_bytes()))


def test_layout(encoded):
    sections = container.read_sections(encoded)
    assert encoded[:8] == container.MAGIC
    assert [s.kind for s in sections] == [b"NETP"] + [b"BLOB"] * 8
    assert container.HEADER_SIZE + sum(s.size_on_disk for s in sections) == len(encoded)


def with_fixed_header_crc(data: bytearray) -> bytes:
    struct.pack_into("<I", data, 16, zlib.crc32(bytes(data[:16])))
    return bytes(data)


def test_unknown_version(encoded):
    data = bytearray(encoded)
    struct.pack_into("<I", data, 8, 6)
    with pytest.raises(FormatError, match="unknown format version 6; this cmpstore reads versions 1, 2, 3, 4 and 5"):
        container.read_sections(with_fixed_header_crc(data))


def test_header_corruption(encoded):
    data = bytearray(encoded)
    data[9] ^= 0x40
    with pytest.raises(FormatError, match="header checksum mismatch"):
        container.read_sections(bytes(data))


def test_section_corruption_names_the_section(encoded):
    data = bytearray(encoded)
    data[-10] ^= 0x01
    with pytest.raises(FormatError, match=r"section 8 at byte \d+: checksum mismatch"):
        container.read_sections(bytes(data))


def test_huge_declared_section_is_rejected_before_reading(encoded):
    data = bytearray(encoded)
    struct.pack_into("<I", data, container.HEADER_SIZE + 4, 0x7FFFFFFF)
    with pytest.raises(FormatError, match="declares 2147483647 bytes but only"):
        container.read_sections(bytes(data))


def test_too_many_sections(encoded):
    data = bytearray(encoded)
    struct.pack_into("<I", data, 12, 1 << 30)
    with pytest.raises(FormatError, match="more than the file can hold"):
        container.read_sections(with_fixed_header_crc(data))


def test_trailing_bytes(encoded):
    with pytest.raises(FormatError, match="1 trailing bytes"):
        container.read_sections(encoded + b"\0")


@pytest.mark.parametrize("length", [0, 5, 19, 20, 30, 100])
def test_truncation(encoded, length):
    with pytest.raises(FormatError):
        api.decode_bytes(encoded[:length])


def test_every_single_bit_flip_is_detected():
    model = build_model((LayerSpec("c", "Convolution", (4, 1, 3, 3), 0.5, 8),), seed=3)
    data = api.encode(model)
    for bit in range(8 * len(data)):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(FormatError):
            api.decode_bytes(bytes(damaged))

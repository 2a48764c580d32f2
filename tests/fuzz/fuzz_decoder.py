#!/usr/bin/env python3
"""Fuzz the .cmps decoder (atheris).

    pip install atheris
    python tests/fuzz/fuzz_decoder.py -max_total_time=300 [CORPUS_DIR]

Every input must decode or raise a CmpstoreError that is not an internal
error, within 2 s (libFuzzer's -timeout) and 2 GB.  A crash is written by
libFuzzer as crash-<sha1>; keep it in tests/fixtures/crashers/ as
cmps-<name> once fixed.
"""

import struct
import zlib

import atheris
import fuzz_common  # sets up sys.path

with atheris.instrument_imports(include=["cmpstore"]):
    from nets import layer_net_bytes, legacy_net_bytes, lenet_like_bytes

    from cmpstore import api
    from cmpstore.caffe.caffemodel import split_caffemodel
    from cmpstore.errors import CmpstoreError
    from cmpstore.synthetic import LayerSpec, build_model


def test_one_input(data: bytes) -> None:
    # Half the inputs get their checksums repaired, so mutations reach the section parsers.
    if data[:1] and data[0] & 1:
        data = with_valid_checksums(data[1:])
    try:
        api.decode_bytes(data)
    except CmpstoreError as error:
        fuzz_common.clean(error)


def with_valid_checksums(data: bytes) -> bytes:
    """Recompute the header and section CRCs wherever the declared lengths allow."""
    out = bytearray(data)
    if len(out) < 20:
        return bytes(out)
    struct.pack_into("<I", out, 16, zlib.crc32(bytes(out[:16])))
    pos = 20
    while pos + 12 <= len(out):
        (length,) = struct.unpack_from("<I", out, pos + 4)
        end = pos + 8 + length
        if end + 4 > len(out):
            break
        struct.pack_into("<I", out, end, zlib.crc32(bytes(out[pos:end])))
        pos = end + 4
    return bytes(out)


def seeds() -> dict[str, bytes]:
    small = build_model((LayerSpec("c", "Convolution", (4, 1, 3, 3), 0.5, 8),), seed=3)
    files = {
        "small.cmps": api.encode(small),
        "zoo.cmps": api.encode(split_caffemodel(layer_net_bytes())),
        "legacy.cmps": api.encode(split_caffemodel(legacy_net_bytes(double=True))),
        "paper.cmps": api.encode(split_caffemodel(lenet_like_bytes()), index_bits={"conv": 8, "fc": 5}),
        "ans.cmps": api.encode(split_caffemodel(lenet_like_bytes()), coder="ans"),
        # Dense weights: codec 4, rANS-coded and stored byte planes.
        "dense.cmps": api.encode(build_model((LayerSpec("c", "Convolution", (8, 4, 3, 3), 1.0, None),), seed=4)),
    }
    # Each seed twice: as is (first byte even) and for the checksum-repairing path (odd).
    return {f"{mark}-{name}": bytes([mark]) + data for name, data in files.items() for mark in (0, 1)}


if __name__ == "__main__":
    fuzz_common.run(test_one_input, seeds())

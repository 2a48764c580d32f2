#!/usr/bin/env python3
"""Size and speed of cmpstore on the reference LeNet, beside generic compressors.

    python bench/lenet_size.py [MODEL]   (default ../shared/models/lenet_pq_seed_schedule.caffemodel)

Prints, from one run: the cmpstore file size (best index widths, and the
paper's fixed conv=8,fc=5), the paper's storage scheme computed here
(fixed 8/5-bit relative index with fillers, full 256/32-entry float32
codebooks, Huffman on both streams, float32 biases), the sizes from bzip2 -9,
xz -9e, zstd -22 and gzip -9 run now, and encode/decode times (best of 5, one
process, one thread).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

from common import SHARED_MODELS, best_time, paper_scheme_bytes

from cmpstore import api
from cmpstore.cmps.reader import open_cmps

DEFAULT = SHARED_MODELS / "lenet_pq_seed_schedule.caffemodel"
GENERIC = [
    ("bzip2 -9", ["bzip2", "-9", "-c"]),
    ("xz -9e", ["xz", "-9e", "-c"]),
    ("zstd -22 --ultra --long", ["zstd", "-22", "--ultra", "--long", "-c", "-q"]),
    ("gzip -9", ["gzip", "-9", "-c"]),
]


def main() -> int:
    source = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    if not source.exists():
        print(f"{source} not found (it lives in ../shared/models beside the project)")
        return 1
    original = source.stat().st_size
    model = api.load_model(source)
    encoded = api.encode(model)
    paper_fixed = api.encode(model, index_bits={"conv": 8, "fc": 5})
    with tempfile.TemporaryDirectory() as folder:
        encoded_path = pathlib.Path(folder) / "m.cmps"
        encoded_path.write_bytes(encoded)
        dense_path = pathlib.Path(folder) / "dense.caffemodel"
        again_path = pathlib.Path(folder) / "again.cmps"

        def encode_file():
            api.encode(source, again_path)
            os.remove(again_path)

        def decode_file():
            api.decode(encoded_path, dense_path)
            os.remove(dense_path)

        encode_time = best_time(encode_file, 5)
        decode_time = best_time(decode_file, 5)
        api.decode(encoded_path, dense_path)
        identical = dense_path.read_bytes() == source.read_bytes()

    rows = [
        ("cmpstore (index bits chosen per layer)", len(encoded)),
        ("cmpstore --index-bits conv=8,fc=5", len(paper_fixed)),
        ("paper scheme (fixed 8/5 bits, full codebooks)", paper_scheme_bytes(model)),
    ]
    for name, command in GENERIC:
        if shutil.which(command[0]) is None:
            rows.append((f"{name} (not installed)", None))
            continue
        with open(source, "rb") as stream:
            out = subprocess.run(command, stdin=stream, capture_output=True, check=True).stdout
        rows.append((name, len(out)))
    print(f"{source.name}: {original:,} B")
    for name, size in rows:
        if size is None:
            print(f"  {name:48} -")
        else:
            print(f"  {name:48} {size:>10,.0f} B  {original / size:6.1f}x")
    print(f"  encode (file -> .cmps on disk)                   {encode_time * 1000:8.1f} ms")
    print(f"  decode (.cmps -> dense .caffemodel on disk)      {decode_time * 1000:8.1f} ms")
    print(f"  decoded file byte-identical to the input:        {identical}")
    cmps = open_cmps(encoded)
    chosen = [
        (b.layer.name, cmps.describe(b).index_bits) for b in cmps.entries if b.address.blob_index == 0 and b.layer.kind
    ]
    print("  index bits chosen: " + ", ".join(f"{name}={bits}" for name, bits in chosen))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""cmpstore against generic compressors on LeNet, AlexNet- and VGG-16-shaped models, in one run.

    python bench/suite.py [--quick] [--json results.json] [--keep DIR]

For each model: cmpstore's size and ratio (Huffman and rANS streams),
encode and decode time (file to file on disk; decode the median of three
runs, each writing a new file) and peak RSS (subprocesses under
/usr/bin/time -v); zstd -19, zstd -3, xz -6 and bzip2 -9 (size,
compress and decompress time); the paper's fixed-width scheme; how long
reading all weights into numpy takes against protobuf's own ParseFromString;
and how close the rANS streams come to their zero-order entropy.  Then the
targets of the VGG-16 model are checked.  --quick runs LeNet and a small net
in seconds (for CI).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import statistics
import sys
import tempfile

import numpy as np
from common import SHARED_MODELS, best_time, measured, paper_scheme_bytes

from cmpstore import api, synthetic
from cmpstore.caffe._proto import caffe_pb2
from cmpstore.caffe.caffemodel import split_caffemodel
from cmpstore.cmps.reader import open_cmps
from cmpstore.streams.relative_index import gaps_with_fillers

#: Decodes (and decompressions) per model, each to a new file; the median is reported.  One run alone
#: swings by 3x on a busy 2-core machine (the page cache reclaiming what the runs before wrote).
DECODE_RUNS = 3
GENERIC = {
    "zstd -19": (["zstd", "-19", "-q", "-c"], ["zstd", "-d", "-q", "-c"]),
    "zstd -3": (["zstd", "-3", "-q", "-c"], ["zstd", "-d", "-q", "-c"]),
    "xz -6": (["xz", "-6", "-c"], ["xz", "-d", "-c"]),
    "bzip2 -9": (["bzip2", "-9", "-c"], ["bzip2", "-d", "-c"]),
}
SMALL = (
    synthetic.LayerSpec("conv", "Convolution", (64, 32, 3, 3), 0.4, 256),
    synthetic.LayerSpec("fc", "InnerProduct", (256, 2048), 0.1, 32),
)


def models(quick: bool, folder: pathlib.Path) -> dict[str, pathlib.Path]:
    found = {}
    shared = SHARED_MODELS / "lenet_pq_seed_schedule.caffemodel"
    if shared.exists():
        found["lenet (shared)"] = shared
    generated = {"small": SMALL} if quick else {"alexnet": synthetic.ALEXNET, "vgg16": synthetic.VGG16}
    for name, specs in generated.items():
        path = folder / f"{name}.caffemodel"
        if not path.exists():
            api.save_model(synthetic.build_model(specs, seed=0, name=name), path)
        found[name] = path
    return found


def run_cmpstore(path: pathlib.Path, folder: pathlib.Path, coder: str) -> dict:
    cli = [sys.executable, "-m", "cmpstore"]
    encoded, decoded = folder / f"{path.stem}.{coder}.cmps", folder / f"{path.stem}.{coder}.dense.caffemodel"
    encode_time, encode_peak = measured(
        [*cli, "encode", str(path), "-o", str(encoded), "--force", "-q", "--coder", coder]
    )
    decodes = []
    for _ in range(DECODE_RUNS):
        decoded.unlink(missing_ok=True)  # each run writes a new file, as zstd -d's do below
        decodes.append(measured([*cli, "decode", str(encoded), "-o", str(decoded), "-q"]))
    decode_time = statistics.median(seconds for seconds, _ in decodes)
    decode_peak = max(peak for _, peak in decodes)
    identical = decoded.read_bytes() == path.read_bytes()
    result = {
        "bytes": encoded.stat().st_size,
        "encode_s": encode_time,
        "decode_s": decode_time,
        "encode_peak_bytes": encode_peak,
        "decode_peak_bytes": decode_peak,
        "byte_identical": identical,
    }
    decoded.unlink()
    return result


def run_generic(path: pathlib.Path, folder: pathlib.Path, name: str) -> dict:
    compress, decompress = GENERIC[name]
    if shutil.which(compress[0]) is None:
        return {"missing": True}
    packed = folder / f"{path.stem}.{name.replace(' ', '')}"
    with open(path, "rb") as source, open(packed, "wb") as sink:
        compress_time, _ = measured(compress, stdin=source, stdout=sink)
    decompress_times = []
    for _ in range(DECODE_RUNS):
        (folder / "unpacked").unlink(missing_ok=True)
        with open(packed, "rb") as source, open(folder / "unpacked", "wb") as sink:
            decompress_times.append(measured(decompress, stdin=source, stdout=sink)[0])
    decompress_time = statistics.median(decompress_times)
    size = packed.stat().st_size
    packed.unlink()
    (folder / "unpacked").unlink()
    return {"bytes": size, "compress_s": compress_time, "decompress_s": decompress_time}


def parse_times(path: pathlib.Path) -> dict:
    data = path.read_bytes()
    ours = best_time(lambda: split_caffemodel(data))
    protobuf = best_time(lambda: caffe_pb2.NetParameter.FromString(data))
    return {"cmpstore_s": ours, "protobuf_s": protobuf}


def stream_entropy(path: pathlib.Path, encoded: bytes) -> dict:
    """rANS-coded bits of the sparse streams against their zero-order entropy."""
    model = api.load_model(path)
    values = {p.address: p.values for p in model.payloads}
    coded_bits = entropy_bits = 0.0
    cmps = open_cmps(encoded)
    for blob in cmps.entries:
        stats = cmps.describe(blob)
        if stats.codec != "sparse-ans":
            continue
        weights = values[blob.address]
        positions = np.flatnonzero(weights.view(f"u{weights.itemsize}"))
        gaps, fillers = gaps_with_fillers(positions, stats.index_bits)
        _, indices = np.unique(weights[positions].view(f"u{weights.itemsize}"), return_inverse=True)
        symbols = np.zeros(gaps.size, dtype=np.int64)
        keep = np.ones(gaps.size, dtype=bool)
        keep[fillers] = False
        symbols[keep] = indices + (1 if fillers.size else 0)
        for stream in (gaps, symbols):
            counts = np.bincount(stream)
            counts = counts[counts > 0]
            entropy_bits += float(-(counts * np.log2(counts / counts.sum())).sum())
        coded_bits += stats.index_stream_bits + stats.weight_stream_bits
    return {
        "coded_bits": coded_bits,
        "entropy_bits": entropy_bits,
        "excess_percent": 100 * (coded_bits / entropy_bits - 1) if entropy_bits else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="LeNet and a small net only, seconds")
    parser.add_argument("--json", default="bench-results.json", help="where to write the results")
    parser.add_argument("--keep", help="keep the generated models in this folder")
    args = parser.parse_args()
    folder = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="cmpstore-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, path in models(args.quick, folder).items():
        dense = path.stat().st_size
        entry = {"dense_bytes": dense, "paper_scheme_bytes": paper_scheme_bytes(api.load_model(path))}
        entry["cmpstore"] = run_cmpstore(path, folder, "huffman")
        entry["cmpstore_ans"] = run_cmpstore(path, folder, "ans")
        entry["ans_streams"] = stream_entropy(path, (folder / f"{path.stem}.ans.cmps").read_bytes())
        entry["parse"] = parse_times(path)
        for generic in GENERIC:
            entry[generic] = run_generic(path, folder, generic)
        results[name] = entry
        print_model(name, entry)
    if "vgg16" in results:
        print_targets(results["vgg16"])
    pathlib.Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.json}")
    if not args.keep:
        shutil.rmtree(folder)
    return 0


def print_model(name: str, entry: dict) -> None:
    dense = entry["dense_bytes"]
    print(f"\n{name}: {dense:,} B dense")
    print(f"  {'':32} {'bytes':>12} {'ratio':>7} {'encode s':>9} {'decode s':>9} {'peak/dense':>11}")
    for key, label in (("cmpstore", "cmpstore (Huffman)"), ("cmpstore_ans", "cmpstore --coder ans")):
        run = entry[key]
        peak = max(run["encode_peak_bytes"], run["decode_peak_bytes"]) / dense
        print(
            f"  {label:32} {run['bytes']:12,} {dense / run['bytes']:6.1f}x {run['encode_s']:9.2f} "
            f"{run['decode_s']:9.2f} {peak:10.2f}x  identical={run['byte_identical']}"
        )
    print(
        f"  {'paper scheme (8/5-bit, full cb)':32} {entry['paper_scheme_bytes']:12,.0f} "
        f"{dense / entry['paper_scheme_bytes']:6.1f}x"
    )
    for generic in GENERIC:
        run = entry[generic]
        if run.get("missing"):
            print(f"  {generic:32} (not installed)")
            continue
        print(
            f"  {generic:32} {run['bytes']:12,} {dense / run['bytes']:6.1f}x {run['compress_s']:9.2f} "
            f"{run['decompress_s']:9.2f}"
        )
    parse = entry["parse"]
    print(
        f"  parse: cmpstore {parse['cmpstore_s'] * 1000:.1f} ms, protobuf ParseFromString "
        f"{parse['protobuf_s'] * 1000:.1f} ms"
    )
    streams = entry["ans_streams"]
    if streams["excess_percent"] is not None:
        print(
            f"  rANS streams: {streams['coded_bits'] / 8:,.0f} B against a zero-order entropy of "
            f"{streams['entropy_bits'] / 8:,.0f} B (+{streams['excess_percent']:.3f}%)"
        )


def print_targets(vgg: dict) -> None:
    ours, dense = vgg["cmpstore"], vgg["dense_bytes"]
    checks = [
        ("size <= 0.9 x bzip2 -9", ours["bytes"], 0.9 * vgg["bzip2 -9"]["bytes"]),
        ("size <= 0.7 x xz -6", ours["bytes"], 0.7 * vgg["xz -6"]["bytes"]),
        ("decode <= 4 x zstd -d (of zstd -19)", ours["decode_s"], 4 * vgg["zstd -19"]["decompress_s"]),
        ("decode <= 2 x xz -d", ours["decode_s"], 2 * vgg["xz -6"]["decompress_s"]),
        ("encode <= bzip2 -9", ours["encode_s"], vgg["bzip2 -9"]["compress_s"]),
        ("encode peak <= 2.5 x dense", ours["encode_peak_bytes"], 2.5 * dense),
        ("decode peak <= 2.5 x dense", ours["decode_peak_bytes"], 2.5 * dense),
        ("parse <= 2 x ParseFromString", vgg["parse"]["cmpstore_s"], 2 * vgg["parse"]["protobuf_s"]),
    ]
    print("\nvgg16 targets:")
    for label, value, limit in checks:
        print(f"  {'met ' if value <= limit else 'MISSED'} {label:38} {value:14,.3f} vs {limit:14,.3f}")


if __name__ == "__main__":
    sys.exit(main())

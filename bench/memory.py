#!/usr/bin/env python3
"""Peak memory of encode and decode on a VGG-16-sized pruned, quantized model.

    python bench/memory.py [--model vgg16|alexnet|lenet] [--keep DIR]

Writes the seeded model with cmpstore's own writer, then runs
``cmpstore encode`` and ``cmpstore decode`` as subprocesses under
``/usr/bin/time -v`` and prints each one's wall time and peak resident
memory beside the dense model's size.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cmpstore import api, synthetic  # noqa: E402

MODELS = {"vgg16": synthetic.VGG16, "alexnet": synthetic.ALEXNET, "lenet": synthetic.LENET}


def measured(command: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS in bytes of a command, from GNU time."""
    done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    hours, minutes, seconds = int(clock.group(1) or 0), int(clock.group(2)), float(clock.group(3))
    return hours * 3600 + minutes * 60 + seconds, peak_kib * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="vgg16")
    parser.add_argument("--keep", help="write the files here and keep them")
    args = parser.parse_args()
    folder = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="cmpstore-memory-"))
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / f"{args.model}.caffemodel"
    if not model_path.exists():
        api.save_model(synthetic.build_model(MODELS[args.model], seed=0, name=args.model), model_path)
    dense = model_path.stat().st_size
    cli = [sys.executable, "-m", "cmpstore"]
    encoded_path, decoded_path = folder / f"{args.model}.cmps", folder / f"{args.model}_dense.caffemodel"
    encode_time, encode_peak = measured([*cli, "encode", str(model_path), "-o", str(encoded_path), "--force"])
    decode_time, decode_peak = measured([*cli, "decode", str(encoded_path), "-o", str(decoded_path), "--force"])
    baseline_time, baseline_peak = measured([sys.executable, "-c", "import cmpstore"])
    identical = decoded_path.read_bytes() == model_path.read_bytes()
    print(f"{args.model}: dense {dense:,} B, encoded {encoded_path.stat().st_size:,} B")
    print(f"  {'':8} {'seconds':>8} {'peak RSS':>14} {'x dense':>8}")
    for name, seconds, peak in (
        ("encode", encode_time, encode_peak),
        ("decode", decode_time, decode_peak),
        ("import", baseline_time, baseline_peak),
    ):
        print(f"  {name:8} {seconds:8.2f} {peak:14,} {peak / dense:8.2f}")
    print(f"  decoded file byte-identical: {identical}")
    if not args.keep:
        for path in (model_path, encoded_path, decoded_path):
            path.unlink()
        folder.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Decode speed against ``zstd -d``: alternating pairs, each writing a new file.

    python bench/decode_speed.py [--model vgg16|alexnet|lenet] [--pairs 7] [--keep DIR] [--json OUT]

The seeded pruned, quantized model (cmpstore.synthetic) is written as a
caffemodel, compressed with ``zstd -19`` and encoded with ``cmpstore
encode``.  Then, ``--pairs`` times, ``zstd -d`` and ``cmpstore decode`` each
write that caffemodel to a file that does not exist yet (the output is
removed after each run, so no run reuses another's page-cache pages), in
alternating order, under ``/usr/bin/time -v``, after one run of each that
is not counted.  Reported: the median wall time of each, the median of the
per-pair ratios, user and system seconds, and the peak resident memory of
decode against the dense size.

cmpstore runs from this checkout with its bytecode cached (in a folder
beside the inputs, through ``PYTHONPYCACHEPREFIX``), as an installed
package's is: where ``PYTHONDONTWRITEBYTECODE`` is set, every run would
otherwise compile the package anew, 40 ms that no user pays.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cmpstore import api, synthetic  # noqa: E402

MODELS = {"vgg16": synthetic.VGG16, "alexnet": synthetic.ALEXNET, "lenet": synthetic.LENET}


def timed(command: list, bytecode: pathlib.Path) -> dict:
    """Wall, user and system seconds and the peak RSS of one command, from GNU time."""
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        PYTHONPYCACHEPREFIX=str(bytecode),
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    done = subprocess.run(
        ["/usr/bin/time", "-v", *map(str, command)], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode:
        raise SystemExit(f"{' '.join(map(str, command))} failed:\n{done.stderr}")

    def number(label: str) -> float:
        return float(re.search(rf"{label}: ([\d.]+)", done.stderr).group(1))

    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    wall = int(clock.group(1) or 0) * 3600 + int(clock.group(2)) * 60 + float(clock.group(3))
    return {
        "wall_s": wall,
        "user_s": number(r"User time \(seconds\)"),
        "sys_s": number(r"System time \(seconds\)"),
        "peak_bytes": int(number(r"Maximum resident set size \(kbytes\)")) * 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="vgg16")
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--keep", type=pathlib.Path, help="folder for the inputs (default: a temporary one)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    folder = args.keep or pathlib.Path(tempfile.mkdtemp(prefix="cmpstore-decode-speed-"))
    folder.mkdir(parents=True, exist_ok=True)
    dense = folder / f"{args.model}.caffemodel"
    if not dense.exists():
        api.save_model(synthetic.build_model(MODELS[args.model], seed=0), dense)
    packed = folder / f"{args.model}.caffemodel.zst"
    if not packed.exists():
        subprocess.run(["zstd", "-19", "-T0", "-q", "-f", dense, "-o", packed], check=True)
    encoded = folder / f"{args.model}.cmps"
    if not encoded.exists():
        api.encode(dense, encoded)
    commands = {
        "zstd -d": lambda out: ["zstd", "-d", "-q", packed, "-o", out],
        "cmpstore decode": lambda out: [sys.executable, "-m", "cmpstore", "decode", encoded, "-o", out, "-q"],
    }
    runs: dict[str, list[dict]] = {name: [] for name in commands}
    bytecode = folder / "pycache"
    for pair in range(-1, args.pairs):  # pair -1 caches the bytecode and the inputs, and is not counted
        order = list(commands) if pair % 2 == 0 else list(reversed(commands))
        for name in order:
            out = folder / f"out-{pair}-{name.split()[0]}.caffemodel"
            out.unlink(missing_ok=True)  # a run stopped earlier may have left it
            run = timed(commands[name](out), bytecode)
            if out.read_bytes() != dense.read_bytes():
                raise SystemExit(f"{name} wrote something other than the caffemodel")
            out.unlink()
            if pair >= 0:
                runs[name].append(run)
    figures = {"model": args.model, "dense_bytes": dense.stat().st_size, "cmps_bytes": encoded.stat().st_size}
    for name, measured in runs.items():
        figures[name] = {key: statistics.median(run[key] for run in measured) for key in measured[0]}
    ratios = [
        ours["wall_s"] / theirs["wall_s"] for ours, theirs in zip(runs["cmpstore decode"], runs["zstd -d"], strict=True)
    ]
    figures["ratio_median"] = statistics.median(ratios)
    figures["decode_peak_over_dense"] = figures["cmpstore decode"]["peak_bytes"] / figures["dense_bytes"]
    print(f"{args.model}: {figures['dense_bytes'] / 1e6:.1f} MB dense, {figures['cmps_bytes'] / 1e6:.2f} MB .cmps")
    print(f"{'':18}{'wall s':>8}{'user s':>8}{'sys s':>8}{'peak MB':>9}   (medians of {args.pairs} pairs)")
    for name in commands:
        run = figures[name]
        print(f"{name:18}{run['wall_s']:8.2f}{run['user_s']:8.2f}{run['sys_s']:8.2f}{run['peak_bytes'] / 1e6:9.1f}")
    print(
        f"decode / zstd -d: {figures['ratio_median']:.2f}x (median of pair ratios); "
        f"decode peak {figures['decode_peak_over_dense']:.3f}x dense"
    )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

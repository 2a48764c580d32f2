#!/usr/bin/env python3
"""How encode and decode cost grows: with the number of weights, and with the number of nonzeros.

    python bench/scaling.py [--keep DIR]

Series 1: nets of 1, 2, 4 and 8 VGG fc6-sized layers (4096 x 25088 weights
each, 4 % nonzero, 32 clusters).  Series 2: one fc6-sized layer at 2, 4, 8
and 16 % nonzero.  Each point: dense size, encoded size, encode and decode
time and peak RSS (subprocesses under /usr/bin/time -v), and time per
million weights and per million nonzeros.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile

from common import measured

from cmpstore import api, synthetic

FC6 = (4096, 25088)


def point(folder: pathlib.Path, name: str, layers: int, density: float) -> dict:
    specs = tuple(synthetic.LayerSpec(f"fc6_{i}", "InnerProduct", FC6, density, 32) for i in range(layers))
    path = folder / f"{name}.caffemodel"
    api.save_model(synthetic.build_model(specs, seed=0, name=name), path)
    cli = [sys.executable, "-m", "cmpstore"]
    encoded, decoded = folder / f"{name}.cmps", folder / f"{name}.dense.caffemodel"
    encode_s, encode_peak = measured([*cli, "encode", str(path), "-o", str(encoded), "--force", "-q"])
    decode_s, decode_peak = measured([*cli, "decode", str(encoded), "-o", str(decoded), "--force", "-q"])
    weights = layers * FC6[0] * FC6[1]
    result = {
        "name": name,
        "weights": weights,
        "nonzeros": round(weights * density),
        "dense_bytes": path.stat().st_size,
        "encoded_bytes": encoded.stat().st_size,
        "encode_s": encode_s,
        "decode_s": decode_s,
        "encode_peak_bytes": encode_peak,
        "decode_peak_bytes": decode_peak,
    }
    for file in (path, encoded, decoded):
        file.unlink()
    return result


def show(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    print(
        f"  {'':10} {'weights':>13} {'nonzeros':>12} {'encoded B':>12} {'enc s':>7} {'dec s':>7} "
        f"{'enc peak':>9} {'dec peak':>9} {'enc s/M nz':>10} {'dec s/M nz':>10}"
    )
    for row in rows:
        millions = row["nonzeros"] / 1e6
        print(
            f"  {row['name']:10} {row['weights']:13,} {row['nonzeros']:12,} {row['encoded_bytes']:12,} "
            f"{row['encode_s']:7.2f} {row['decode_s']:7.2f} "
            f"{row['encode_peak_bytes'] / row['dense_bytes']:8.2f}x "
            f"{row['decode_peak_bytes'] / row['dense_bytes']:8.2f}x "
            f"{row['encode_s'] / millions:10.3f} {row['decode_s'] / millions:10.3f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="work in this folder")
    args = parser.parse_args()
    folder = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="cmpstore-scaling-"))
    folder.mkdir(parents=True, exist_ok=True)
    by_size = [point(folder, f"{n}x fc6", n, 0.04) for n in (1, 2, 4, 8)]
    show("more weights (4 % nonzero):", by_size)
    by_density = [point(folder, f"{d:.0%} nz", 1, d) for d in (0.02, 0.04, 0.08, 0.16)]
    show("more nonzeros (one fc6-sized layer):", by_density)
    if not args.keep:
        shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())

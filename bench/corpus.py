#!/usr/bin/env python3
"""cmpstore against xz -6 and bzip2 -9 on the real models of tests/real_models.py.

    python bench/corpus.py

Downloads the pinned distributions once (as the corpus test does, into
$CMPSTORE_CORPUS_HOME or ~/.cache/cmpstore/corpus). For each model, in one run:
its size; xz -6, bzip2 -9 and cmpstore of the model as it ships (dense); then
of the model pruned and weight-shared by cmpstore.compress with the corpus
test's settings (conv 0.7 / 256 clusters, fc 0.9 / 32), where xz and bzip2
compress the pruned, shared dense caffemodel that cmpstore stores. xz and
bzip2 are Python's lzma (preset 6) and bz2 (level 9).
"""

from __future__ import annotations

import bz2
import lzma
import pathlib
import sys
import tempfile

from common import ROOT  # bench/common.py, which puts the checkout's cmpstore first on sys.path

from cmpstore import api
from cmpstore.caffe.caffemodel import caffemodel_bytes

sys.path.append(str(ROOT / "tests"))  # after bench/: tests/ has a common.py of its own
import real_models  # noqa: E402

RATIOS = {"conv": 0.7, "fc": 0.9}
CLUSTERS = {"conv": 256, "fc": 32}


def sizes(data: bytes, encoded: bytes) -> tuple[int, int, int]:
    return len(lzma.compress(data, preset=6)), len(bz2.compress(data, 9)), len(encoded)


def main() -> None:
    header = (
        f"{'model':31} {'size B':>11} | {'dense: xz -6':>12} {'bzip2 -9':>11} {'cmpstore':>11} {'/xz':>5} | "
        f"{'pruned: xz -6':>13} {'bzip2 -9':>10} {'cmpstore':>10} {'/xz':>5} {'/bz2':>5}"
    )
    print(header)
    print("-" * len(header))
    totals = [0] * 7
    with tempfile.TemporaryDirectory() as folder:
        for real in real_models.MODELS:
            data = real_models.read_member(real_models.fetch(real.distribution), real.member)
            path = pathlib.Path(folder) / f"{real.name}.caffemodel"
            path.write_bytes(data)
            dense = sizes(data, api.encode(path))
            encoded, _ = api.compress(path, ratios=RATIOS, clusters=CLUSTERS)
            pruned = sizes(caffemodel_bytes(api.decode_bytes(encoded)), encoded)
            row = (len(data), *dense, *pruned)
            totals = [total + value for total, value in zip(totals, row, strict=True)]
            print(line(real.name, row), flush=True)
    print("-" * len(header))
    print(line("total", totals))


def line(name: str, row) -> str:
    size, xz, bzip2, cmps, pruned_xz, pruned_bzip2, pruned_cmps = row
    return (
        f"{name:31} {size:>11,} | {xz:>12,} {bzip2:>11,} {cmps:>11,} {cmps / xz:>5.2f} | "
        f"{pruned_xz:>13,} {pruned_bzip2:>10,} {pruned_cmps:>10,} {pruned_cmps / pruned_xz:>5.2f} "
        f"{pruned_cmps / pruned_bzip2:>5.2f}"
    )


if __name__ == "__main__":
    main()

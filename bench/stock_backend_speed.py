#!/usr/bin/env python3
"""The stock backend's cost per iteration: masking and sharing one weight diff in numpy.

    python bench/stock_backend_speed.py [--shape 4096,9216] [--ratio 0.91] [--clusters 32] [--repeat 5]

The stock backend runs :meth:`LayerConstraint.share` on every scheduled
layer's weight diff after each backward pass.  This times it on one layer
(default: AlexNet's fc6, 4096 x 9216, pruned to the paper's 9 % and shared
with 32 clusters, as Deep Compression stores fc layers in 5 bits) against the
reference :func:`cmpstore.compression.gradients.share_gradients` it replaced,
while pruning (no clusters) and while quantizing, and checks that both give
the same bytes.  Prints milliseconds per iteration, best of ``--repeat``.
"""

from __future__ import annotations

import argparse

import numpy as np
from common import best_time  # noqa: E402  (puts the checkout first on sys.path)

from cmpstore.compression.gradients import share_gradients  # noqa: E402
from cmpstore.finetune.constraints import constrain  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="4096,9216")
    parser.add_argument("--ratio", type=float, default=0.91)
    parser.add_argument("--clusters", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    shape = tuple(int(dim) for dim in args.shape.split(","))
    rng = np.random.default_rng(0)
    weights = rng.normal(0, 0.01, shape).astype(np.float32)
    diff = rng.normal(0, 1e-3, shape).astype(np.float32)
    print(f"layer {'x'.join(map(str, shape))} ({weights.size:,} weights), sparse_ratio {args.ratio}")
    print(f"{'stage':<24}{'reference ms':>14}{'cmpstore ms':>14}{'speed-up':>10}")
    for stage, clusters in (("pruning", None), (f"quantizing ({args.clusters})", args.clusters)):
        limit = constrain("fc6", weights.copy(), args.ratio, clusters)
        expected = share_gradients(diff, limit.mask, limit.labels, reduce="mean")
        work = diff.copy()
        limit.share(work)
        if work.tobytes() != expected.tobytes():
            raise SystemExit(f"{stage}: LayerConstraint.share differs from share_gradients")
        reference = 1000 * best_time(lambda limit=limit: share_gradients(diff, limit.mask, limit.labels), args.repeat)
        ours = 1000 * best_time(lambda limit=limit, work=work: limit.share(work), args.repeat)
        print(f"{stage:<24}{reference:>14.1f}{ours:>14.1f}{reference / ours:>9.1f}x")


if __name__ == "__main__":
    main()

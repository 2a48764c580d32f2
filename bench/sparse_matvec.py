#!/usr/bin/env python3
"""Sparse against dense matrix-vector products on pruned fc layers, from .cmps files.

    python bench/sparse_matvec.py [--repeat 20] [--density 0.04 0.10]

The sparse matrix is ``cmpstore.sparse_weights`` (a ``scipy.sparse.csr_array``
built from the file's relative-indexed entries); the dense one the decoded
weights.  Layers: the shared pruned LeNet's fc1 (500 x 800, 8 % kept by the
fork's schedule; ../shared/models/lenet_pq_seed_schedule.caffemodel, skipped
without it) and VGG-16-shaped fc6 (4096 x 25088) and fc7 (4096 x 4096),
pruned to each ``--density`` and shared with 32 values, seeded.  Deep
Compression reports sparse matrix-vector products 3-4x faster than dense on
a CPU at about 10 % density.  Prints, per layer, the milliseconds per product
(best of ``--repeat``, one thread as numpy and scipy run them here) and the
speed-up.
"""

from __future__ import annotations

import argparse
import os
import tempfile

# One thread for the dense product too, as scipy's sparse one runs (set before numpy loads its BLAS).
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402
from common import SHARED_MODELS, best_time  # noqa: E402

from cmpstore import api  # noqa: E402
from cmpstore.synthetic import LayerSpec, build_model  # noqa: E402


def measure(name: str, cmps: str, layer: str, repeat: int) -> None:
    matrix = api.sparse_weights(cmps, layer)
    dense = matrix.toarray()
    x = np.random.default_rng(0).standard_normal(dense.shape[1]).astype(dense.dtype)
    if not np.allclose(matrix @ x, dense @ x, rtol=1e-4, atol=1e-5):
        raise SystemExit(f"{name}: sparse and dense products differ")
    dense_ms = 1000 * best_time(lambda: dense @ x, repeat)
    sparse_ms = 1000 * best_time(lambda: matrix @ x, repeat)
    density = matrix.nnz / dense.size
    print(f"{name:<28}{'x'.join(map(str, dense.shape)):>12}{density:>9.1%}{dense_ms:>11.2f}{sparse_ms:>11.2f}"
          f"{dense_ms / sparse_ms:>9.1f}x", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--density", type=float, nargs="+", default=[0.04, 0.10])
    args = parser.parse_args()
    print(f"{'layer':<28}{'shape':>12}{'density':>9}{'dense ms':>11}{'sparse ms':>11}{'speed-up':>10}")
    with tempfile.TemporaryDirectory() as folder:
        lenet = SHARED_MODELS / "lenet_pq_seed_schedule.caffemodel"
        if lenet.exists():
            api.encode(lenet, f"{folder}/lenet.cmps")
            measure("LeNet fc1 (fork's schedule)", f"{folder}/lenet.cmps", "fc1", args.repeat)
        for density in args.density:
            specs = (
                LayerSpec("fc6", "InnerProduct", (4096, 25088), density, 32),
                LayerSpec("fc7", "InnerProduct", (4096, 4096), density, 32),
            )
            path = f"{folder}/vgg-{density}.cmps"
            api.encode(build_model(specs, seed=0), path)
            for layer in ("fc6", "fc7"):
                measure(f"VGG-16 {layer}", path, layer, args.repeat)


if __name__ == "__main__":
    main()

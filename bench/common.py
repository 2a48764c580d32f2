"""Helpers shared by the benchmark scripts: timing, peak memory, the paper's storage cost."""

from __future__ import annotations

import heapq
import os
import pathlib
import re
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cmpstore import api  # noqa: E402
from cmpstore.caffe import netproto  # noqa: E402

SHARED_MODELS = ROOT.parent / "shared" / "models"


def best_time(function, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def measured(command: list[str], stdin=None, stdout=None) -> tuple[float, int]:
    """Wall seconds and peak RSS in bytes of a command, from GNU time."""
    # The checkout's cmpstore, not whichever one is installed.
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        ["/usr/bin/time", "-v", *command],
        stdin=stdin,
        stdout=stdout or subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    err = done.stderr.decode()
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{err}")
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1))
    clock = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", err)
    hours, minutes, seconds = int(clock.group(1) or 0), int(clock.group(2)), float(clock.group(3))
    return hours * 3600 + minutes * 60 + seconds, peak_kib * 1024


def huffman_bits(frequencies) -> float:
    """Total bits of an optimal prefix code (the sum of the merged weights)."""
    heap = [int(f) for f in frequencies if f]
    if len(heap) < 2:
        return 0
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        total += merged
        heapq.heappush(heap, merged)
    return total


def paper_scheme_bytes(model) -> float:
    """The paper's storage cost: fixed 8-bit (conv) / 5-bit (fc) relative indices with fillers,
    full 256/32-entry float32 codebooks, Huffman on both streams, everything else raw float32."""
    infos = netproto.layers_by_address(api.check_shapes(model))
    total = 0.0
    for payload in model.payloads:
        layer = infos[(payload.address.layer_field, payload.address.layer_index)]
        if payload.address.blob_index != 0 or not layer.kind:
            total += payload.values.nbytes
            continue
        span = 2 ** (8 if layer.kind == "conv" else 5) - 1
        codebook_size = 256 if layer.kind == "conv" else 32
        positions = np.flatnonzero(payload.values.view(np.uint32))
        gaps = np.diff(positions, prepend=-1)
        fillers = (gaps - 1) // span
        index_symbols = np.concatenate([np.full(int(fillers.sum()), span), gaps - fillers * span])
        _, value_indices = np.unique(payload.values[positions].view(np.uint32), return_inverse=True)
        weight_symbols = np.concatenate([np.zeros(int(fillers.sum()), int), value_indices + 1])
        total += (huffman_bits(np.bincount(index_symbols)) + huffman_bits(np.bincount(weight_symbols))) / 8
        total += codebook_size * 4
    return total

#!/usr/bin/env python3
"""Time to a ready OpenCV net: from a .cmps file against from the dense caffemodel in the page cache.

    python bench/load_time.py [--models lenet alexnet vgg16] [--corpus] [--pruned] [--repeat 5] [--json OUT]

For each synthetic pruned, shared model (cmpstore.synthetic: the paper's
densities and codebook sizes), and with ``--corpus`` each real model of
tests/real_models.py that has a deploy net (as it ships: dense; the pinned
distributions are downloaded once, as the corpus test does), writes the
dense caffemodel, its .cmps and a deploy prototxt, reads the caffemodel
once so it is in the page cache, then times, best of ``--repeat``.  With
``--pruned`` each corpus model is also measured after ``cmpstore.compress``
with bench/corpus.py's settings (conv 0.7, fc 0.9 pruned; 256 and 32
clusters), against its pruned, shared dense caffemodel:

* dense: ``readNetFromCaffe(prototxt, caffemodel bytes read from the file)``;
* cmps: ``cmpstore.opencv.read_net(cmps, prototxt)``, which decodes in memory
  (``cmpstore.caffemodel_bytes``) and hands OpenCV the buffer;

and prints both and their ratio (the target is at most 1.5x), and the decode
alone.  Needs opencv-python-headless<5 (the deploy extra).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

import cv2
import numpy as np
from common import ROOT, best_time

from cmpstore import api, opencv, synthetic
from cmpstore.caffe import netproto

MODELS = {"lenet": synthetic.LENET, "alexnet": synthetic.ALEXNET, "vgg16": synthetic.VGG16}
#: bench/corpus.py's compression of the real models.
PRUNED_RATIOS = {"conv": 0.7, "fc": 0.9}
PRUNED_CLUSTERS = {"conv": 256, "fc": 32}


def synthetic_inputs(folder: pathlib.Path, name: str) -> tuple[pathlib.Path, pathlib.Path]:
    """The seeded model's dense caffemodel and a prototxt of its net (the net without blobs)."""
    model = synthetic.build_model(MODELS[name], seed=0, name=name)
    dense = folder / f"{name}.caffemodel"
    api.save_model(model, dense)
    prototxt = folder / f"{name}.prototxt"
    net = model.net
    for layer in net.layer:
        del layer.blobs[:]
    prototxt.write_text(netproto.to_text(net))
    return dense, prototxt


def corpus_inputs(folder: pathlib.Path, pruned: bool):
    """Each real model with a deploy net: its caffemodel as it ships and that net, from the pinned archives."""
    sys.path.append(str(ROOT / "tests"))  # after bench/: tests/ has a common.py of its own
    import real_models

    for real in real_models.MODELS:
        member = real_models.DEPLOY_NETS.get(real.name)
        if member is None:
            continue
        archive = real_models.fetch(real.distribution)
        dense = folder / f"{real.name}.caffemodel"
        dense.write_bytes(real_models.read_member(archive, real.member))
        prototxt = folder / f"{real.name}.prototxt"
        prototxt.write_bytes(real_models.read_member(archive, member))
        yield real.name, dense, prototxt
        if pruned:
            compressed, _ = api.compress(dense, ratios=PRUNED_RATIOS, clusters=PRUNED_CLUSTERS)
            shared = folder / f"{real.name}-pruned.caffemodel"
            api.save_model(api.decode_bytes(compressed), shared)
            yield f"{real.name} (pruned)", shared, prototxt


def measure(name: str, dense: pathlib.Path, prototxt: pathlib.Path, repeat: int) -> dict:
    cmps = dense.with_suffix(".cmps")
    api.encode(dense, cmps)
    net_text = np.frombuffer(prototxt.read_bytes(), np.uint8)
    dense.read_bytes()  # into the page cache

    def from_dense():
        return cv2.dnn.readNetFromCaffe(net_text, np.frombuffer(dense.read_bytes(), np.uint8))

    dense_s = best_time(from_dense, repeat)
    decode_s = best_time(lambda: api.caffemodel_bytes(cmps), repeat)
    cmps_s = best_time(lambda: opencv.read_net(cmps, prototxt), repeat)
    return {
        "model": name,
        "dense_bytes": dense.stat().st_size,
        "cmps_bytes": cmps.stat().st_size,
        "dense_s": dense_s,
        "decode_s": decode_s,
        "cmps_s": cmps_s,
        "ratio": cmps_s / dense_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--corpus", action="store_true", help="also the real models of tests/real_models.py")
    parser.add_argument("--pruned", action="store_true", help="with --corpus: each also pruned and shared")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    print(f"{'model':<30}{'dense MB':>10}{'dense s':>10}{'decode s':>10}{'cmps s':>10}{'ratio':>8}")
    rows = []
    with tempfile.TemporaryDirectory() as name:
        folder = pathlib.Path(name)
        inputs = [(model, *synthetic_inputs(folder, model)) for model in args.models]
        for model, dense, prototxt in [*inputs, *(corpus_inputs(folder, args.pruned) if args.corpus else [])]:
            row = measure(model, dense, prototxt, args.repeat)
            rows.append(row)
            print(
                f"{model:<30}{row['dense_bytes'] / 1e6:>10.1f}{row['dense_s']:>10.4f}{row['decode_s']:>10.4f}"
                f"{row['cmps_s']:>10.4f}{row['ratio']:>7.2f}x"
            )
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"repeat": args.repeat, "models": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

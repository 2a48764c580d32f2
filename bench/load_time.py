#!/usr/bin/env python3
"""Time to a ready OpenCV net: from a .cmps file against from the dense caffemodel in the page cache.

    python bench/load_time.py [--models lenet alexnet vgg16] [--repeat 5]

For each synthetic pruned, shared model (cmpstore.synthetic: the paper's
densities and codebook sizes), writes the dense caffemodel, its .cmps and a
prototxt of its net, reads the caffemodel once so it is in the page cache,
then times, best of ``--repeat``:

* dense: ``readNetFromCaffe(prototxt, caffemodel bytes read from the file)``;
* cmps: ``cmpstore.opencv.read_net(cmps, prototxt)``, which decodes in memory
  (``cmpstore.caffemodel_bytes``) and hands OpenCV the buffer;

and prints both and their ratio (the target is at most 1.5x), and the decode
alone.  Needs opencv-python-headless<5 (the deploy extra).
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile

import cv2
import numpy as np
from common import best_time

from cmpstore import api, opencv, synthetic
from cmpstore.caffe import netproto

MODELS = {"lenet": synthetic.LENET, "alexnet": synthetic.ALEXNET, "vgg16": synthetic.VGG16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"{'model':<10}{'dense MB':>10}{'dense s':>10}{'decode s':>10}{'cmps s':>10}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            model = synthetic.build_model(MODELS[name], seed=0, name=name)
            dense = pathlib.Path(folder, f"{name}.caffemodel")
            api.save_model(model, dense)
            cmps = pathlib.Path(folder, f"{name}.cmps")
            api.encode(dense, cmps)
            prototxt = pathlib.Path(folder, f"{name}.prototxt")
            net = model.net
            for layer in net.layer:
                del layer.blobs[:]
            prototxt.write_text(netproto.to_text(net))
            net_text = np.frombuffer(prototxt.read_bytes(), np.uint8)
            dense.read_bytes()  # into the page cache

            def from_dense(dense=dense, net_text=net_text):
                return cv2.dnn.readNetFromCaffe(net_text, np.frombuffer(dense.read_bytes(), np.uint8))

            dense_s = best_time(from_dense, args.repeat)
            decode_s = best_time(lambda cmps=cmps: api.caffemodel_bytes(cmps), args.repeat)
            cmps_s = best_time(lambda cmps=cmps, prototxt=prototxt: opencv.read_net(cmps, prototxt), args.repeat)
            megabytes = dense.stat().st_size / 1e6
            print(
                f"{name:<10}{megabytes:>10.1f}{dense_s:>10.3f}{decode_s:>10.3f}{cmps_s:>10.3f}{cmps_s / dense_s:>7.2f}x"
            )


if __name__ == "__main__":
    main()

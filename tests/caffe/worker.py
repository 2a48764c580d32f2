"""Caffe steps the integration tests run in a subprocess (a failed Caffe CHECK aborts the process).

python worker.py forward NET WEIGHTS OUT.npz   # seeded random inputs, every blob after forward
python worker.py create NET OUT.caffemodel      # random parameters, as Caffe itself writes them
python worker.py load NET WEIGHTS OUT.caffemodel  # load, then save at once: no forward pass
python worker.py backward NET WEIGHTS OUT.npz  # seeded inputs and top gradients: parameters and their diffs
"""

import sys

import caffe
import numpy as np


def forward(net_path, weights, out):
    net = caffe.Net(net_path, weights, caffe.TEST)
    rng = np.random.default_rng(7)
    for name in net.inputs:
        net.blobs[name].data[...] = rng.standard_normal(net.blobs[name].data.shape)
    net.forward()
    np.savez(out, **{name: blob.data for name, blob in net.blobs.items()})


def create(net_path, out):
    """Random parameters; BatchNorm gets positive variances and a scale factor of 1."""
    net = caffe.Net(net_path, caffe.TEST)
    rng = np.random.default_rng(3)
    for name, blobs in net.params.items():
        for blob in blobs:
            blob.data[...] = rng.standard_normal(blob.data.shape) * 0.5
        if net.layer_dict[name].type == "BatchNorm":
            blobs[1].data[...] = np.abs(blobs[1].data) + 0.1
            blobs[2].data[...] = 1.0
    net.save(out)


def load(net_path, weights, out):
    caffe.Net(net_path, caffe.TEST, weights=weights).save(out)


def backward(net_path, weights, out):
    """One forward and backward pass (the net sets force_backward); parameters as ``layer/i`` and ``layer/i/diff``."""
    net = caffe.Net(net_path, caffe.TRAIN, weights=weights)
    rng = np.random.default_rng(11)
    for name in net.inputs:
        net.blobs[name].data[...] = rng.standard_normal(net.blobs[name].data.shape)
    net.forward()
    for name in net.outputs:
        net.blobs[name].diff[...] = rng.standard_normal(net.blobs[name].diff.shape)
    net.backward()
    arrays = {}
    for name, blobs in net.params.items():
        for index, blob in enumerate(blobs):
            arrays[f"{name}/{index}"] = blob.data
            arrays[f"{name}/{index}/diff"] = blob.diff
    np.savez(out, **arrays)


if __name__ == "__main__":
    caffe.set_mode_cpu()
    {"forward": forward, "create": create, "load": load, "backward": backward}[sys.argv[1]](*sys.argv[2:])

"""Caffe steps the integration tests run in a subprocess (a failed Caffe CHECK aborts the process).

python worker.py forward NET WEIGHTS OUT.npz   # seeded random inputs, every blob after forward
python worker.py create NET OUT.caffemodel      # random parameters, as Caffe itself writes them
python worker.py load NET WEIGHTS OUT.caffemodel  # load, then save at once: no forward pass
python worker.py backward NET WEIGHTS OUT.npz  # seeded inputs and top gradients: parameters and their diffs
python worker.py train NET SOLVER DATA ITERATIONS OUT.caffemodel  # a net trained from scratch, seeded
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


def train(net_path, solver_path, data_spec, iterations, out):
    """Train ``net_path`` (a train/val net with data layers) from its fillers on cmpstore's data set."""
    from cmpstore.caffe import netproto
    from cmpstore.finetune.data import BatchStream, load_dataset
    from cmpstore.finetune.stagefiles import stage_solver, with_input_layers

    dataset = load_dataset(data_spec)
    fed = with_input_layers(netproto.read_prototxt(net_path), dataset.train_data.shape[1:], net_path)
    fed_path, solver_file = out + ".net.prototxt", out + ".solver.prototxt"
    with open(fed_path, "w") as stream:
        stream.write(netproto.to_text(fed.net))
    # LeNet's own training rate: the shipped solver's 0.001 is for finetuning.
    base = netproto.read_solver_prototxt(solver_path)
    solver = stage_solver(base, fed_path, int(iterations), {"base_lr": 0.01}, gpu=False)
    with open(solver_file, "w") as stream:
        stream.write(netproto.to_text(solver))
    caffe.set_random_seed(0)
    solver = caffe.get_solver(solver_file)
    feed = fed.feeds["train"]
    batches = BatchStream(dataset.train_data, dataset.train_labels, feed.batch_size, 0)

    def on_start():
        images, labels = batches.next()
        solver.net.blobs[feed.data_top].data[...] = (images - feed.mean) * feed.scale
        solver.net.blobs[feed.label_top].data[...] = labels

    solver.add_callback(on_start, lambda: None)
    solver.step(int(iterations))
    solver.net.save(out)


if __name__ == "__main__":
    caffe.set_mode_cpu()
    {"forward": forward, "create": create, "load": load, "backward": backward, "train": train}[sys.argv[1]](
        *sys.argv[2:]
    )

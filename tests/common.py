"""Helpers shared by the tests: one round-trip check for every codec and stream."""

from __future__ import annotations

import os
import pathlib

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
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "cmpstore", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=ROOT_ENV
    )
    return done.returncode, done.stdout, done.stderr

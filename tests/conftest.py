"""Fixtures shared by the test modules (helpers that are not fixtures live in common.py and nets.py)."""

import pytest
from nets import lenet_like_bytes


@pytest.fixture
def lenet(tmp_path):
    """A LeNet-shaped binary caffemodel, pruned and shared as the fork leaves one (nets.lenet_like_bytes)."""
    path = tmp_path / "lenet.caffemodel"
    path.write_bytes(lenet_like_bytes())
    return path

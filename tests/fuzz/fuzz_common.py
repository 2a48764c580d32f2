"""Shared by the atheris fuzz targets: seed corpora and the rule that only clean errors may escape."""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def seed_folder(seeds: dict[str, bytes]) -> str:
    folder = tempfile.mkdtemp(prefix="cmpstore-fuzz-")
    for name, data in seeds.items():
        pathlib.Path(folder, name).write_bytes(data)
    return folder


def run(test_one_input, seeds: dict[str, bytes]) -> None:
    """Fuzz ``test_one_input``; options as for libFuzzer, plus a generated seed corpus.

    Defaults: 2 s per input (a hang is a failure), 2 GB of memory.
    """
    import atheris

    arguments = list(sys.argv)
    if not any(arg.startswith("-timeout=") for arg in arguments):
        arguments.append("-timeout=2")
    if not any(arg.startswith("-rss_limit_mb=") for arg in arguments):
        arguments.append("-rss_limit_mb=2048")
    if not any(not arg.startswith("-") for arg in arguments[1:]):
        arguments.append(seed_folder(seeds))
    atheris.Setup(arguments, test_one_input)
    atheris.Fuzz()


def clean(error: Exception) -> None:
    """A CmpstoreError is the expected outcome, unless it wraps an internal error."""
    if "internal error" in str(error):
        raise AssertionError(str(error)) from error


os.environ.setdefault("PYTHONHASHSEED", "0")

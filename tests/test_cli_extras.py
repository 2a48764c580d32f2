"""Plots, progress and logging, standard output, npz export, the stable JSON report."""

import json
import struct

import numpy as np
import pytest
from common import assert_bit_identical, run_cli, shared_model

from cmpstore import api


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("source", ["generated", "shared"])
def test_report_plot_is_a_valid_png(lenet, tmp_path, source):
    pytest.importorskip("matplotlib")
    model = lenet if source == "generated" else shared_model("lenet_pq_seed_schedule.caffemodel")
    run_cli("encode", model, "-o", tmp_path / "lenet.cmps")
    code, out, err = run_cli("report", tmp_path / "lenet.cmps", "--plot", tmp_path / "lenet.png")
    assert code == 0, err
    width, height = png_size(tmp_path / "lenet.png")
    assert 1200 <= width <= 2400 and 600 <= height <= 1400
    assert (tmp_path / "lenet.png").stat().st_size > 20_000  # histograms and bars, not an empty canvas


def test_quiet_by_default_off_a_terminal_and_verbose_logs_each_blob(lenet, tmp_path):
    code, out, err = run_cli("encode", lenet, "-o", tmp_path / "a.cmps")
    assert code == 0 and err == ""
    code, out, err = run_cli("encode", lenet, "-o", tmp_path / "b.cmps", "-v")
    assert code == 0
    assert err.count("cmpstore: ") == 8 and "fc1 blob 0: 400,000 values" in err
    code, out, err = run_cli("encode", lenet, "-o", tmp_path / "c.cmps", "-q")
    assert code == 0 and out == "" and err == ""


def test_standard_output(lenet, tmp_path):
    import subprocess
    import sys

    from common import ROOT_ENV

    encoded = subprocess.run(
        [sys.executable, "-m", "cmpstore", "encode", str(lenet), "-o", "-"], capture_output=True, env=ROOT_ENV
    )
    assert encoded.returncode == 0
    assert encoded.stdout == api.encode(lenet)
    (tmp_path / "m.cmps").write_bytes(encoded.stdout)
    decoded = subprocess.run(
        [sys.executable, "-m", "cmpstore", "decode", str(tmp_path / "m.cmps"), "-o", "-"],
        capture_output=True,
        env=ROOT_ENV,
    )
    assert decoded.returncode == 0 and decoded.stdout == lenet.read_bytes()


def test_npz_export(lenet, tmp_path):
    run_cli("encode", lenet, "-o", tmp_path / "m.cmps")
    code, _, err = run_cli("decode", tmp_path / "m.cmps", "--format", "npz", "-o", tmp_path / "w.npz")
    assert code == 0, err
    exported = np.load(tmp_path / "w.npz")
    weights = api.load_weights(lenet)
    assert sorted(exported) == sorted(f"{name}/{i}" for name, blobs in weights.items() for i in range(len(blobs)))
    for name, blobs in weights.items():
        for index, blob in enumerate(blobs):
            assert_bit_identical(exported[f"{name}/{index}"], blob)


def test_json_report_is_versioned_and_adds_up(lenet, tmp_path):
    run_cli("encode", lenet, "-o", tmp_path / "m.cmps")
    _, out, _ = run_cli("report", tmp_path / "m.cmps", "--json")
    report = json.loads(out)
    assert report["report_version"] == 1
    for row in report["layers"]:
        parts = row["index_bytes"] + row["weight_bytes"] + row["codebook_bytes"] + row["other_bytes"]
        assert parts == row["bytes_after"]


@pytest.mark.parametrize(
    "command",
    ["encode", "decode", "report", "inspect", "verify", "prune", "quantize", "compress", "import-han", "example"],
)
def test_every_command_has_help_with_an_example(command):
    code, out, _ = run_cli(command, "--help")
    assert code == 0 and "example:" in out and "cmpstore " + command in out

"""The command line: every command end to end, its output streams, plots, npz export and the JSON report."""

import json
import os
import struct

import numpy as np
import pytest
from common import assert_bit_identical, run_cli, shared_model

from cmpstore import api


def test_encode_report_decode_verify(lenet, tmp_path):
    code, out, err = run_cli("encode", lenet, "-o", tmp_path / "lenet.cmps")
    assert code == 0, err
    assert "lenet.cmps" in out
    code, out, err = run_cli("report", tmp_path / "lenet.cmps")
    assert code == 0, err
    assert "conv1" in out and "fc2" in out and "total" in out
    code, out, err = run_cli("decode", tmp_path / "lenet.cmps", "-o", tmp_path / "dense.caffemodel")
    assert code == 0, err
    assert (tmp_path / "dense.caffemodel").read_bytes() == lenet.read_bytes()
    code, out, err = run_cli("verify", lenet, tmp_path / "lenet.cmps")
    assert code == 0 and "bit-identical" in out
    code, out, err = run_cli("inspect", tmp_path / "lenet.cmps")
    assert code == 0 and "NETP" in out and "BLOB" in out


def test_report_json_totals_match_file_size(lenet, tmp_path):
    run_cli("encode", lenet, "-o", tmp_path / "lenet.cmps")
    code, out, _ = run_cli("report", tmp_path / "lenet.cmps", "--json")
    report = json.loads(out)
    after = sum(row["bytes_after"] for row in report["layers"]) + report["structure_after"]
    assert after == report["total_after"] == os.path.getsize(tmp_path / "lenet.cmps")
    before = sum(row["bytes_before"] for row in report["layers"]) + report["structure_before"]
    assert before == report["total_before"] == os.path.getsize(lenet)


def test_report_on_caffemodel_shows_what_encode_writes(lenet, tmp_path):
    run_cli("encode", lenet, "-o", tmp_path / "lenet.cmps")
    _, from_model, _ = run_cli("report", lenet, "--json")
    _, from_file, _ = run_cli("report", tmp_path / "lenet.cmps", "--json")
    assert json.loads(from_model)["total_after"] == json.loads(from_file)["total_after"]


def test_verify_reports_a_difference(lenet, tmp_path):
    from cmpstore import api
    from cmpstore.caffe.caffemodel import split_caffemodel

    model = split_caffemodel(lenet.read_bytes())
    values = model.payloads[0].values.copy()
    values[3] = 1.0 if values[3] != 1.0 else 2.0
    model.payloads[0].values = values
    api.save_model(model, tmp_path / "other.caffemodel")
    code, out, _ = run_cli("verify", lenet, tmp_path / "other.caffemodel")
    assert code == 1
    assert "layer 'conv1' blob 0: 1 of 500 values differ" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["encode", "missing.caffemodel"], "missing.caffemodel: no such file"),
        (["decode", "missing.cmps"], "missing.cmps: no such file"),
        (["report", "."], ".: is a directory"),
    ],
)
def test_errors_are_one_line_and_exit_2(args, message, tmp_path):
    code, out, err = run_cli(*args, cwd=tmp_path)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("empty.caffemodel", b"", "empty file"),
        ("photo.caffemodel", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01" * 10, "not a valid binary caffemodel"),
        ("net.prototxt", b'name: "LeNet"\nlayer {\n  name: "data"\n  type: "Input"\n}\n', "text file (a prototxt?)"),
    ],
)
def test_bad_inputs_to_encode(tmp_path, name, data, message):
    path = write(tmp_path, name, data)
    code, _, err = run_cli("encode", path, "-o", tmp_path / "out.cmps")
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out.cmps").exists()


def test_empty_net(tmp_path):
    from cmpstore.caffe._proto import caffe_pb2

    path = write(tmp_path, "empty_net.caffemodel", caffe_pb2.NetParameter(name="nothing").SerializeToString())
    code, _, err = run_cli("encode", path)
    assert code == 2 and "no layers found" in err


def test_corrupted_and_truncated_encoded_files(lenet, tmp_path):
    run_cli("encode", lenet, "-o", tmp_path / "lenet.cmps")
    data = (tmp_path / "lenet.cmps").read_bytes()
    write(tmp_path, "truncated.cmps", data[: len(data) // 2])
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0x10
    write(tmp_path, "damaged.cmps", bytes(damaged))
    for name, message in (("truncated.cmps", "declares"), ("damaged.cmps", "checksum mismatch")):
        code, _, err = run_cli("decode", tmp_path / name, "-o", tmp_path / "out.caffemodel")
        assert code == 2 and message in err and name in err
        assert not (tmp_path / "out.caffemodel").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cmpstore-")]


def test_unwritable_output(lenet, tmp_path):
    code, _, err = run_cli("encode", lenet, "-o", tmp_path / "no" / "such" / "dir" / "out.cmps")
    assert code == 2 and "cannot write here" in err


def test_output_is_not_overwritten_without_force(lenet, tmp_path):
    out = write(tmp_path, "out.cmps", b"keep me")
    code, _, err = run_cli("encode", lenet, "-o", out)
    assert code == 2 and "--force" in err and out.read_bytes() == b"keep me"
    code, _, err = run_cli("encode", lenet, "-o", out, "--force")
    assert code == 0 and out.read_bytes() != b"keep me"


def test_never_overwrites_its_input(lenet):
    code, _, err = run_cli("encode", lenet, "-o", lenet, "--force")
    assert code == 2 and "refusing to overwrite an input" in err


def test_index_bits_option(lenet, tmp_path):
    code, _, err = run_cli("encode", lenet, "-o", tmp_path / "p.cmps", "--index-bits", "conv=8,fc=5")
    assert code == 0, err
    _, out, _ = run_cli("report", tmp_path / "p.cmps", "--json")
    bits = {row["name"]: row["index_bits"] for row in json.loads(out)["layers"]}
    assert bits == {"conv1": 8, "conv2": 8, "fc1": 5, "fc2": 5}
    code, _, err = run_cli("encode", lenet, "-o", tmp_path / "q.cmps", "--index-bits", "conv=99")
    assert code == 2 and "must be in 1..16" in err
    code, _, err = run_cli("encode", lenet, "-o", tmp_path / "q.cmps", "--index-bits", "nolayer=4")
    assert code == 2 and "'nolayer'" in err


def test_version():
    code, out, _ = run_cli("--version")
    assert code == 0 and out.startswith("cmpstore ")


def test_shared_lenet_cli(tmp_path):
    source = shared_model("lenet_pq_seed_schedule.caffemodel")
    assert run_cli("encode", source, "-o", tmp_path / "l.cmps")[0] == 0
    assert run_cli("decode", tmp_path / "l.cmps", "-o", tmp_path / "l.caffemodel")[0] == 0
    assert (tmp_path / "l.caffemodel").read_bytes() == source.read_bytes()


@pytest.mark.parametrize(
    "make_args",
    [
        lambda d: ["example", d / "e.caffemodel"],
        lambda d: ["compress", d / "src.caffemodel", "--ratios", "fc=0.9", "--clusters", "fc=8", "-o", d / "c.cmps"],
        lambda d: ["prune", d / "src.caffemodel", "--ratios", "fc=0.9", "-o", d / "p.caffemodel"],
        lambda d: ["quantize", d / "src.caffemodel", "--clusters", "fc=8", "-o", d / "q.caffemodel"],
        lambda d: ["encode", d / "src.caffemodel", "-o", d / "x.cmps"],
    ],
)
def test_quiet_prints_nothing(tmp_path, make_args):
    from cmpstore import api
    from cmpstore.synthetic import build_model

    api.save_model(build_model(), tmp_path / "src.caffemodel")
    code, out, err = run_cli(*make_args(tmp_path), "-q")
    assert code == 0, err
    assert out == "" and err == ""


# --- plots, progress and logging, standard output, npz export, the JSON report ---------------------


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


def test_the_command_flushes_what_it_printed_then_ends_with_mains_status(monkeypatch, capsys):
    from cmpstore import cli

    def main():
        print("written", end="")  # no newline: still in the buffer when main returns
        return 3

    ended = []
    monkeypatch.setattr(cli, "main", main)
    monkeypatch.setattr(cli.os, "_exit", ended.append)
    cli.run()
    assert ended == [3]
    assert capsys.readouterr().out == "written"


def test_the_command_reports_through_a_pipe_before_ending(tmp_path):
    code, out, errors = run_cli("example", tmp_path / "lenet.caffemodel", "--seed", "0")
    assert code == 0 and errors == ""
    assert "lenet.caffemodel" in out
    code, out, errors = run_cli("inspect", tmp_path / "missing.cmps")
    assert code == 2 and out == ""
    assert "missing.cmps" in errors

"""Outputs: never an input, never replaced without --force (checked when the file is put in place),
only regular files, every write error one line, and text never on a stdout that carries data."""

import errno
import os
import resource
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
from common import ROOT_ENV, run_cli
from nets import lenet_like_bytes

from cmpstore import api
from cmpstore.atomic import Placement, atomic_output
from cmpstore.caffe.caffemodel import split_caffemodel
from cmpstore.errors import UsageError
from cmpstore.synthetic import LayerSpec, build_model


@pytest.fixture
def encoded(tmp_path, lenet):
    path = tmp_path / "lenet.cmps"
    api.encode(lenet, path)
    return path


def temporaries(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".cmpstore-")]


# --- never an input, never replaced without --force -------------------------------------------


def test_report_plot_never_replaces_the_input(encoded):
    before = encoded.read_bytes()
    code, _, err = run_cli("report", encoded, "--plot", encoded, "--force")
    assert code == 2 and f"{encoded}: refusing to overwrite an input of this command" in err
    assert encoded.read_bytes() == before


def test_report_plot_needs_force_to_replace_a_file(encoded, tmp_path):
    plot = tmp_path / "old.png"
    plot.write_bytes(b"an old picture")
    code, _, err = run_cli("report", encoded, "--plot", plot)
    assert code == 2 and "output exists; use --force to overwrite it" in err
    assert plot.read_bytes() == b"an old picture"
    code, _, err = run_cli("report", encoded, "--plot", plot, "--force")
    assert code == 0, err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compress_never_replaces_its_prototxt(lenet, tmp_path):
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text('layer { name: "fc1" type: "CmpInnerProduct" inner_product_param { sparse_ratio: 0.5 } }\n')
    before = prototxt.read_bytes()
    code, _, err = run_cli("compress", lenet, "--from-prototxt", prototxt, "-o", prototxt, "--force")
    assert code == 2 and "refusing to overwrite an input of this command" in err
    assert prototxt.read_bytes() == before


def test_import_han_never_replaces_its_prototxt(tmp_path):
    prototxt = tmp_path / "deploy.prototxt"
    prototxt.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 } } }\n')
    before = prototxt.read_bytes()
    (tmp_path / "m.net").write_bytes(b"\0" * 16)
    code, _, err = run_cli("import-han", tmp_path / "m.net", "--prototxt", prototxt, "-o", prototxt, "--force")
    assert code == 2 and "refusing to overwrite an input of this command" in err
    assert prototxt.read_bytes() == before


def test_a_file_that_appears_during_the_write_is_kept(tmp_path):
    """The existence check holds when the file is put in place, not only at the start."""
    output = tmp_path / "out.bin"
    with pytest.raises(UsageError, match="output appeared while it was being written; use force=True"):
        with atomic_output(output) as stream:
            stream.write(b"new")
            output.write_bytes(b"someone else's")
    assert output.read_bytes() == b"someone else's"
    assert temporaries(tmp_path) == []


def test_with_force_the_file_is_replaced_in_one_step(tmp_path):
    output = tmp_path / "out.bin"
    output.write_bytes(b"old")
    with atomic_output(output, Placement(force=True)) as stream:
        stream.write(b"new")
    assert output.read_bytes() == b"new"
    assert temporaries(tmp_path) == []


def test_two_encodes_to_one_output_cannot_both_succeed(lenet, tmp_path):
    output = tmp_path / "out.cmps"
    command = [sys.executable, "-m", "cmpstore", "encode", str(lenet), "-o", str(output)]
    processes = [subprocess.Popen(command, env=ROOT_ENV, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [(process.wait(timeout=120), process.stderr.read()) for process in processes]
    assert sorted(code for code, _ in results) == [0, 2, 2, 2], results
    assert all("output exists" in err or "output appeared" in err for code, err in results if code)
    assert output.read_bytes() == api.encode(lenet)
    assert temporaries(tmp_path) == []


# --- only regular files --------------------------------------------------------------------------


def test_a_directory_is_named_as_one(encoded, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    code, _, err = run_cli("decode", encoded, "-o", folder, "--force")
    assert code == 2 and f"{folder}: is a directory; name an output file" in err


@pytest.mark.parametrize("device", ["fifo", "/dev/null"])
def test_a_device_or_fifo_is_refused_never_replaced(encoded, tmp_path, device):
    if device == "fifo":
        device = tmp_path / "pipe"
        os.mkfifo(device)
    mode = os.stat(device).st_mode
    code, _, err = run_cli("decode", encoded, "-o", device, "--force")
    assert code == 2 and "is not a regular file (a device, FIFO or socket)" in err
    assert os.stat(device).st_mode == mode and not stat.S_ISREG(mode)


# --- text never on a stdout that carries data -----------------------------------------------------


def test_with_stderr_closed_the_summary_does_not_land_in_the_data(lenet):
    done = subprocess.run(
        [sys.executable, "-m", "cmpstore", "encode", str(lenet), "-o", "-"],
        capture_output=True,
        env=ROOT_ENV,
        stdin=subprocess.DEVNULL,
        preexec_fn=lambda: os.close(2),
    )
    assert done.returncode == 0
    assert done.stdout == api.encode(lenet)


# --- every write error is one line, exit status 2 -------------------------------------------------


def limited_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize(
    ("suffix", "extra"),
    [(".caffemodel", ()), (".npz", ()), (".h5", ()), (".cmps", ())],
    ids=["caffemodel", "npz", "h5", "cmps"],
)
def test_a_file_size_limit_is_one_line(encoded, lenet, tmp_path, suffix, extra):
    output = tmp_path / f"out{suffix}"
    command = ["encode", str(lenet)] if suffix == ".cmps" else ["decode", str(encoded)]
    done = subprocess.run(
        [sys.executable, "-m", "cmpstore", *command, "-o", str(output), *extra],
        capture_output=True,
        text=True,
        env=ROOT_ENV,
        preexec_fn=limited_file_size(4096),
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"{output}: cannot write" in done.stderr
    assert not output.exists() and temporaries(tmp_path) == []


def test_a_file_size_limit_on_the_plot_is_one_line(encoded, tmp_path):
    plot = tmp_path / "out.png"
    done = subprocess.run(
        [sys.executable, "-m", "cmpstore", "report", str(encoded), "--plot", str(plot)],
        capture_output=True,
        text=True,
        env=ROOT_ENV,
        preexec_fn=limited_file_size(2048),
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{plot}: cannot write" in done.stderr
    assert not plot.exists() and temporaries(tmp_path) == []


def test_a_full_disk_is_one_line(tmp_path):
    with pytest.raises(UsageError, match=r"out.bin: cannot write \(No space left on device\)"):
        with atomic_output(tmp_path / "out.bin"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert temporaries(tmp_path) == []


def test_plot_of_non_finite_weights_draws(tmp_path):
    model = split_caffemodel(lenet_like_bytes())
    model.payloads[0].values = np.full(model.payloads[0].values.size, np.nan, dtype="<f4")
    api.save_model(model, tmp_path / "nan.caffemodel")
    code, _, err = run_cli("report", tmp_path / "nan.caffemodel", "--plot", tmp_path / "nan.png")
    assert code == 0, err
    assert (tmp_path / "nan.png").stat().st_size > 0


def test_stdout_on_a_full_device_is_one_line(lenet):
    with open("/dev/full", "wb") as full:
        for args in (["encode", str(lenet), "-o", "-"], ["report", str(lenet)]):
            done = subprocess.run(
                [sys.executable, "-m", "cmpstore", *args], stdout=full, stderr=subprocess.PIPE, text=True, env=ROOT_ENV
            )
            assert done.returncode == 2, done.stderr
            assert "cannot write to standard output (No space left on device)" in done.stderr
            assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


@pytest.mark.parametrize("args", [["encode", "{lenet}", "-o", "-"], ["report", "{lenet}"], ["inspect", "{cmps}"]])
def test_a_closed_stdout_is_one_line(lenet, encoded, args):
    args = [arg.format(lenet=lenet, cmps=encoded) for arg in args]
    done = subprocess.run(
        [sys.executable, "-m", "cmpstore", *args],
        stderr=subprocess.PIPE,
        text=True,
        env=ROOT_ENV,
        preexec_fn=lambda: os.close(1),
    )
    assert done.returncode == 2, done.stderr
    assert "standard output is closed" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [["example"], ["encode", "{lenet}"], ["prune", "{lenet}", "--ratios", "fc=0.5"]])
def test_a_closed_stdout_stops_before_writing_unless_quiet(lenet, tmp_path, command):
    output = tmp_path / ("out.cmps" if command[0] == "encode" else "out.caffemodel")
    args = [arg.format(lenet=lenet) for arg in command] + (
        ["-o", str(output)] if command[0] != "example" else [str(output)]
    )
    for quiet, code in (([], 2), (["-q"], 0)):
        done = subprocess.run(
            [sys.executable, "-m", "cmpstore", *args, *quiet],
            stderr=subprocess.PIPE, text=True, env=ROOT_ENV, preexec_fn=lambda: os.close(1),
        )  # fmt: skip
        assert done.returncode == code, done.stderr
        assert output.exists() == (code == 0)
        if code:
            assert done.stderr.count("\n") == 1 and "standard output is closed; use -q" in done.stderr


def test_a_broken_pipe_exits_141_quietly(lenet):
    reader, writer = os.pipe()
    os.close(reader)  # nobody reads: the first write breaks the pipe
    done = subprocess.run(
        [sys.executable, "-m", "cmpstore", "encode", str(lenet), "-o", "-"],
        stdout=writer,
        stderr=subprocess.PIPE,
        text=True,
        env=ROOT_ENV,
    )
    os.close(writer)
    assert done.returncode == 141
    assert done.stderr == ""


def test_running_out_of_memory_is_one_line(lenet, tmp_path):
    script = (
        "import sys, cmpstore.api as api\n"
        "def exhausted(*args, **kwargs):\n    raise MemoryError\n"
        "api.write_model = exhausted\n"
        "from cmpstore.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "encode", str(lenet), "-o", str(tmp_path / "out.cmps")],
        capture_output=True,
        text=True,
        env=ROOT_ENV,
    )
    assert done.returncode == 2
    assert done.stderr == "cmpstore encode: error: not enough memory\n"


# --- inputs that can be read only once ---------------------------------------------------------------


@pytest.mark.parametrize("command", ["inspect", "report", "decode", "verify"])
def test_a_pipe_is_read_as_the_file_it_carries(encoded, lenet, tmp_path, command):
    args = {
        "inspect": ["inspect", "/dev/stdin"],
        "report": ["report", "/dev/stdin"],
        "decode": ["decode", "/dev/stdin", "-o", str(tmp_path / "back.caffemodel")],
        "verify": ["verify", str(lenet), "/dev/stdin"],
    }[command]
    with open(encoded, "rb") as stream:
        done = subprocess.run(
            [sys.executable, "-m", "cmpstore", *args], stdin=stream, capture_output=True, text=True, env=ROOT_ENV
        )
    assert done.returncode == 0, done.stderr
    if command == "decode":
        assert (tmp_path / "back.caffemodel").read_bytes() == lenet.read_bytes()


def test_a_caffemodel_and_an_hdf5_file_arrive_through_a_pipe_too(lenet, tmp_path):
    api.encode(lenet, tmp_path / "m.cmps")
    api.decode(tmp_path / "m.cmps", tmp_path / "m.h5")
    for source in (lenet, tmp_path / "m.h5"):
        with open(source, "rb") as stream:
            done = subprocess.run(
                [sys.executable, "-m", "cmpstore", "verify", str(lenet), "/dev/stdin"],
                stdin=stream,
                capture_output=True,
                text=True,
                env=ROOT_ENV,
            )
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_a_reader_that_leaves_early_is_a_broken_pipe_not_a_success(command, tmp_path):
    """The reader takes a few bytes while the writer waits in a write larger than the pipe, then goes.

    A buffered write then came back short, and the command still exited 0
    with a summary claiming the full size.
    """
    model = tmp_path / "dense.caffemodel"
    dense = (LayerSpec("fc", "InnerProduct", (512, 512), 1.0, None),)  # 1 MiB of barely compressible floats
    api.save_model(build_model(dense), model)
    source = model
    if command == "decode":
        source = tmp_path / "dense.cmps"
        api.encode(model, source)
    writer = subprocess.Popen(
        [sys.executable, "-m", "cmpstore", command, str(source), "-o", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ROOT_ENV,
    )
    first = writer.stdout.read(16)
    time.sleep(1.0)  # the writer is now blocked with the pipe full
    writer.stdout.close()
    status = writer.wait(timeout=120)
    stderr = writer.stderr.read().decode()
    assert len(first) == 16
    assert status == 141, stderr
    assert "Traceback" not in stderr and " B, " not in stderr  # no summary claiming what was not delivered


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")
@pytest.mark.parametrize("command", ["inspect", "report", "decode", "encode"])
def test_a_device_as_input_is_refused_before_reading_it(command, tmp_path):
    """/dev/zero has no size and no end: it would be read until memory runs out."""
    args = [command, "/dev/zero"] + (["-o", str(tmp_path / "out")] if command in ("decode", "encode") else [])
    done = subprocess.run([sys.executable, "-m", "cmpstore", *args], capture_output=True, text=True, env=ROOT_ENV)
    assert done.returncode == 2
    assert "/dev/zero: is a device, not a model file" in done.stderr and "Traceback" not in done.stderr


def test_decode_bytes_refuses_a_path():
    with pytest.raises(UsageError, match="decode_bytes takes the bytes of a .cmps file, got str"):
        api.decode_bytes("model.cmps")

"""A write that is killed or interrupted leaves the old output or none, never a partial file."""

import os
import pathlib
import signal
import stat
import subprocess
import sys
import time

import pytest
from nets import lenet_like_bytes

from cmpstore import api
from cmpstore.atomic import Placement, write_chunks
from cmpstore.caffe.caffemodel import split_caffemodel
from cmpstore.errors import UsageError

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Runs `cmpstore decode` with a writer that stops after its first write, so the
# test can interrupt it at a known point mid-write.
STALLING_DECODE = """
import os, signal, sys, time

# As at a terminal, even when the tests run as a background job that inherits SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)

real_pwrite = os.pwrite
parent = os.getpid()
in_workers = os.environ.get("STALL_IN_WORKERS") == "1"

def stalling_pwrite(descriptor, data, offset):
    written = real_pwrite(descriptor, data, offset)
    if in_workers and os.getpid() == parent:
        return written
    os.write(1, b"mid-write\\n")  # one write: two workers' lines must not interleave
    time.sleep(3 if in_workers else 60)  # the parent waits for a worker's blob to finish
    return written

os.pwrite = stalling_pwrite
if in_workers:
    import cmpstore.cmps.dense_writer
    cmpstore.cmps.dense_writer.PARALLEL_ABOVE_BYTES = 0
    os.cpu_count = lambda: 2
from cmpstore.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start_stalled_decode(encoded, output, *extra, in_workers=False):
    env = dict(os.environ, PYTHONPATH=str(ROOT), STALL_IN_WORKERS="1" if in_workers else "0")
    process = subprocess.Popen(
        [sys.executable, "-c", STALLING_DECODE, "decode", str(encoded), "-o", str(output), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout.readline().strip() == "mid-write"
    return process


@pytest.fixture()
def encoded(tmp_path):
    path = tmp_path / "m.cmps"
    path.write_bytes(api.encode(split_caffemodel(lenet_like_bytes())))
    return path


def leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".cmpstore-")]


@pytest.mark.parametrize("in_workers", [False, True], ids=["in-process", "parallel"])
def test_ctrl_c_leaves_no_output_and_no_temporary(encoded, tmp_path, in_workers):
    output = tmp_path / "out.caffemodel"
    process = start_stalled_decode(encoded, output, in_workers=in_workers)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "interrupted" in err and "Traceback" not in err
    assert not output.exists()
    assert leftovers(tmp_path) == []


def test_ctrl_c_keeps_the_old_output(encoded, tmp_path):
    output = tmp_path / "out.caffemodel"
    output.write_bytes(b"the old model")
    process = start_stalled_decode(encoded, output, "--force")
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)
    assert output.read_bytes() == b"the old model"
    assert leftovers(tmp_path) == []


def test_kill_never_leaves_a_partial_output(encoded, tmp_path):
    output = tmp_path / "out.caffemodel"
    output.write_bytes(b"the old model")
    process = start_stalled_decode(encoded, output, "--force")
    process.kill()  # SIGKILL: no cleanup can run, only the rename protects the output
    process.communicate(timeout=30)
    assert output.read_bytes() == b"the old model"
    # What SIGKILL can leave is the hidden temporary, never a partial out.caffemodel.
    assert all(name.endswith(".part") for name in leftovers(tmp_path))


def workers_left(output) -> list[str]:
    """Processes still running with the output's path on their command line (forked workers share it)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as stream:
                    if str(output).encode() in stream.read():
                        found.append(pid)
            except OSError:
                pass
    return found


@pytest.mark.parametrize("in_workers", [False, True], ids=["in-process", "parallel"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_clean_up_like_ctrl_c(encoded, tmp_path, signum, in_workers):
    output = tmp_path / "out.caffemodel"
    process = start_stalled_decode(encoded, output, in_workers=in_workers)
    process.send_signal(signum)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 128 + signum
    assert f"terminated by {signal.Signals(signum).name}" in err and "Traceback" not in err
    assert not output.exists()
    assert leftovers(tmp_path) == []
    assert workers_left(output) == []


def test_workers_die_with_a_killed_parent(encoded, tmp_path):
    """SIGKILL gives the parent no chance to stop its workers; the kernel does (PR_SET_PDEATHSIG)."""
    output = tmp_path / "out.caffemodel"
    process = start_stalled_decode(encoded, output, in_workers=True)
    process.kill()
    process.communicate(timeout=30)
    for _ in range(50):
        if not workers_left(output):
            break
        time.sleep(0.1)
    assert workers_left(output) == []


def test_replacing_a_file_keeps_its_permissions(tmp_path):
    target = tmp_path / "private.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    write_chunks(target, [b"new"], Placement(force=True))
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_new_file_gets_the_umask_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        write_chunks(tmp_path / "new.bin", [b"x"])
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == 0o644


def test_a_dangling_symbolic_link_as_output_says_what_it_is(tmp_path):
    link = tmp_path / "out.bin"
    link.symlink_to(tmp_path / "missing.bin")
    with pytest.raises(UsageError, match="out.bin: is a symbolic link to a file that does not exist"):
        write_chunks(link, [b"x"])
    assert not (tmp_path / "missing.bin").exists()

"""Decoding straight to a caffemodel file gives the same bytes as decoding to a model and joining it."""

import concurrent.futures
import multiprocessing
import os
import signal
import threading
import time

import pytest
from nets import layer_net_bytes, legacy_net_bytes, lenet_like_bytes

from cmpstore import api
from cmpstore.caffe.caffemodel import caffemodel_bytes, split_caffemodel
from cmpstore.cmps import container, dense_writer
from cmpstore.cmps.container import read_sections
from cmpstore.cmps.reader import open_cmps
from cmpstore.errors import FormatError, UsageError
from cmpstore.synthetic import LENET, build_model


def encoded(raw: bytes, coder="huffman"):
    return open_cmps(api.encode(split_caffemodel(raw), coder=coder))


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    "raw",
    [lenet_like_bytes(), layer_net_bytes(), legacy_net_bytes(), legacy_net_bytes(double=True)],
    ids=["lenet", "layers", "legacy", "double"],
)
def test_same_bytes_as_decode_in_process_or_forked(tmp_path, raw, workers):
    output = tmp_path / "out.caffemodel"
    size = dense_writer.write_caffemodel(encoded(raw), output, workers=workers)
    assert output.read_bytes() == raw
    assert size == len(raw)


def test_windows_split_sparse_blobs_exactly(tmp_path, monkeypatch):
    """A window much smaller than the blobs, not dividing them, with entries on every border."""
    monkeypatch.setattr(dense_writer, "WINDOW_BYTES", 4 * 37)
    model = build_model(LENET, seed=3)
    for payload in model.payloads:
        payload.values[::37] = 1.5
        payload.values[36::37] = -2.5
    output = tmp_path / "out.caffemodel"
    dense_writer.write_caffemodel(open_cmps(api.encode(model, coder="ans")), output)
    assert output.read_bytes() == caffemodel_bytes(model)


def test_deploy_matches_decode_deploy(tmp_path):
    cmps = encoded(lenet_like_bytes())
    (tmp_path / "m.cmps").write_bytes(cmps.buffer)
    expected = caffemodel_bytes(api.decode(tmp_path / "m.cmps", deploy=True))
    dense_writer.write_caffemodel(cmps, tmp_path / "out.caffemodel", deploy=True)
    assert (tmp_path / "out.caffemodel").read_bytes() == expected


@pytest.mark.parametrize("workers", [1, 2])
def test_a_corrupt_blob_in_a_worker_is_a_format_error_and_leaves_no_file(tmp_path, workers):
    """The last blob loses its last byte, behind valid checksums: only its codec can notice."""
    original = encoded(lenet_like_bytes())
    sections = read_sections(original.buffer)
    rebuilt = container.header_bytes(len(sections), original.version) + b"".join(
        container.section_bytes(s.kind, bytes(s.payload)[: -1 if number == len(sections) - 1 else None])
        for number, s in enumerate(sections)
    )
    output = tmp_path / "out.caffemodel"
    cmps = open_cmps(rebuilt)  # the damage is inside the last blob's codec payload, not in its head
    with pytest.raises(FormatError, match="blob"):
        dense_writer.write_caffemodel(cmps, output, workers=workers)
    assert list(tmp_path.iterdir()) == []


def test_large_models_go_parallel_by_default(tmp_path, monkeypatch):
    monkeypatch.setattr(dense_writer, "PARALLEL_ABOVE_BYTES", 1000)
    monkeypatch.setattr(dense_writer.os, "cpu_count", lambda: 2)
    started = []
    real = dense_writer._write_in_workers

    def spy(workers, tasks, progress, output):
        started.append(workers)
        return real(workers, tasks, progress, output)

    monkeypatch.setattr(dense_writer, "_write_in_workers", spy)
    raw = lenet_like_bytes()
    dense_writer.write_caffemodel(encoded(raw), tmp_path / "out.caffemodel")
    assert (tmp_path / "out.caffemodel").read_bytes() == raw
    assert started == [2]


def test_four_threads_decoding_at_once_each_get_their_own_bytes(tmp_path):
    """Each thread decodes its own model, many times over, while the others do the same."""
    sources, expected = [], []
    for seed in range(4):
        model = build_model(LENET, seed=seed)
        source = tmp_path / f"m{seed}.cmps"
        api.encode(model, source)
        sources.append(source)
        expected.append(caffemodel_bytes(model))
    start = threading.Barrier(4)

    def decode_repeatedly(seed: int) -> list[bool]:
        start.wait()
        outcomes = []
        for round_ in range(8):
            output = tmp_path / f"out-{seed}-{round_}.caffemodel"
            api.decode(sources[seed], output)
            outcomes.append(output.read_bytes() == expected[seed])
            outcomes.append(caffemodel_bytes(api.decode(sources[seed])) == expected[seed])
        return outcomes

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(decode_repeatedly, range(4)))
    assert all(all(outcomes) for outcomes in results), results


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "2"])
def test_workers_must_be_a_positive_whole_number(tmp_path, workers):
    with pytest.raises(UsageError, match="workers must be a whole number of at least 1"):
        dense_writer.write_caffemodel(encoded(lenet_like_bytes()), tmp_path / "out.caffemodel", workers=workers)
    assert not (tmp_path / "out.caffemodel").exists()


def test_workers_are_bounded_by_the_cpus_and_the_blobs():
    assert dense_writer.worker_count(10**6, 3, 1 << 30) <= 3
    assert dense_writer.worker_count(10**6, 1000, 1 << 30) <= (os.cpu_count() or 1)
    assert dense_writer.worker_count(None, 1000, 1) == 1  # small models stay in-process


@pytest.mark.parametrize(
    "raw",
    [lenet_like_bytes(), layer_net_bytes(), legacy_net_bytes(), legacy_net_bytes(double=True)],
    ids=["lenet", "layers", "legacy", "double"],
)
@pytest.mark.parametrize("coder", ["huffman", "ans"])
def test_in_memory_buffer_is_the_file_decode_writes(tmp_path, raw, coder):
    cmps = encoded(raw, coder=coder)
    assert dense_writer.caffemodel_buffer(cmps).tobytes() == raw
    dense_writer.write_caffemodel(cmps, tmp_path / "deploy.caffemodel", deploy=True)
    assert dense_writer.caffemodel_buffer(cmps, deploy=True).tobytes() == (tmp_path / "deploy.caffemodel").read_bytes()


def test_a_worker_that_dies_is_an_error_not_a_hang(tmp_path, monkeypatch):
    """As when the OOM killer takes a worker: one line, and no partial file left."""
    if "fork" not in multiprocessing.get_all_start_methods() or (os.cpu_count() or 1) < 2:
        pytest.skip("needs fork and two CPUs")

    def die(self, task):
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(dense_writer._Write, "part", die)  # inherited by the forked workers
    output = tmp_path / "out.caffemodel"
    began = time.monotonic()
    with pytest.raises(UsageError, match=r"out.caffemodel: a decode worker was killed by SIGKILL \(out of memory\?\)"):
        dense_writer.write_caffemodel(encoded(lenet_like_bytes()), output, workers=2)
    assert time.monotonic() - began < 60
    assert list(tmp_path.iterdir()) == []


def test_in_memory_buffer_without_memfd_is_the_same(monkeypatch):
    raw = lenet_like_bytes()
    monkeypatch.delattr(dense_writer.os, "memfd_create", raising=False)
    assert dense_writer.caffemodel_buffer(encoded(raw)).tobytes() == raw


def test_in_memory_buffer_in_workers_is_the_same(monkeypatch):
    if "fork" not in multiprocessing.get_all_start_methods() or not hasattr(os, "memfd_create"):
        pytest.skip("needs fork and memfd")
    raw = layer_net_bytes()
    monkeypatch.setattr(dense_writer.os, "cpu_count", lambda: 2)
    assert dense_writer.caffemodel_buffer(encoded(raw), workers=2).tobytes() == raw


def test_a_worker_gets_its_next_blob_when_it_is_done_so_one_huge_blob_does_not_hold_up_others(tmp_path, monkeypatch):
    """The worker that draws the largest blob is not also dealt a share of the rest up front."""
    real = dense_writer._write_blob
    cmps = encoded(lenet_like_bytes())
    largest = max(range(len(cmps.entries)), key=lambda index: cmps.entries[index].count)

    def slow_on_the_largest(task):
        if task[1] == (largest, 0):
            time.sleep(1.0)
        name, detail = real(task)
        return name, f"{detail} pid {os.getpid()}"

    monkeypatch.setattr(dense_writer, "_write_blob", slow_on_the_largest)
    reports = []
    raw = lenet_like_bytes()
    dense_writer.write_caffemodel(cmps, tmp_path / "out.caffemodel", workers=2, progress=lambda *r: reports.append(r))
    assert (tmp_path / "out.caffemodel").read_bytes() == raw
    by_pid = {}
    for name, detail in reports:
        by_pid.setdefault(detail.rsplit(" pid ", 1)[1], []).append(name)
    assert len(reports) == len(cmps.entries) and len(by_pid) == 2
    huge = cmps.entries[largest].name
    assert [names for names in by_pid.values() if huge in names] == [[huge]]

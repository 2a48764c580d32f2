"""Build the first stage's nets once in a child process, so that a Caffe abort becomes one line.

Caffe checks much with glog ``CHECK``s that abort the whole process: pretrained
weights whose shapes do not fit the net's data, a corrupt LMDB, a mean file
of the wrong shape, a crop larger than the images.  Before the driver trains
in its own process, a child builds the train and test nets the way a stage
will, loads the pretrained weights into them and runs one forward pass each;
if it dies, its last fatal log line, with the layer Caffe was setting up, is
the error the user sees, and nothing has been written but the stage files.

Run as ``python -m cmpstore.finetune.preflight NET WEIGHTS MODE``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from ..caffe import netproto
from ..errors import CmpstoreError, UsageError
from .datalayers import data_layers

#: A glog fatal line: "F1203 20:10:05.123456 12345 data_layer.cpp:45] Check failed: ..." (newer glogs
#: put the year in front of the month and day: "F20261203 ...").
_FATAL = re.compile(r"F(?:\d{4}){1,2} [\d:.]+\s+\d+ ([\w.]+):\d+\] (.*)$")
#: What a CHECK says, where another thread's output broke its log line.
_CHECK = re.compile(r"(Check failed: .*)$")


def check_in_caffe(net_path: str, weights: str, gpu: bool, env: dict | None = None, name: str | None = None) -> None:
    """Raise UsageError naming ``name`` (else ``net_path``) and the layer if Caffe cannot build, load or run the net."""
    child_env = dict(os.environ if env is None else env, GLOG_minloglevel="0", GLOG_logtostderr="1")
    done = subprocess.run(
        [sys.executable, "-m", "cmpstore.finetune.preflight", net_path, weights, "gpu" if gpu else "cpu"],
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    if done.returncode == 0:
        return
    raise UsageError(
        caffe_failure(done.stderr, done.returncode, _data_layers_by_phase(net_path)), path=name or net_path
    )


def caffe_failure(log: str, status: int, data_layers: dict[str, list[str]] | None = None) -> str:
    """One line from a failed Caffe child's log: where it was, and what its fatal check said.

    The child announces each step (``cmpstore-preflight: TRAIN build``); a
    fatal check in Caffe's data code (a database, the transformer, an image
    or HDF5 reader) is put on that phase's data layers, named from the net.
    """
    fatal, source, step = None, "", None
    for line in log.splitlines():
        announced = _STEP_LINE.search(line)
        if announced:
            step = [announced.group(1), announced.group(2)]
        # search, not match: a data layer's prefetch thread can fail while the main thread writes.
        found = _FATAL.search(line.strip())
        if found:
            source, fatal = found.group(1), found.group(2).strip()
            break
    if fatal is None:
        checks = [found for found in map(_CHECK.search, log.splitlines()) if found]
        if checks:
            source, fatal = "data", checks[0].group(1).strip()
    if fatal is None:
        python_error = [line for line in log.splitlines() if line.strip()][-1:] or [f"exit status {status}"]
        return f"Caffe failed on this net ({python_error[0].strip()})"
    context = []
    if step:
        phase, action = step[0], step[1]
        context.append(f"{phase} phase, {_ACTIONS.get(action, action)}")
        layers = (data_layers or {}).get(phase.lower(), [])
        if layers and any(word in source for word in _DATA_SOURCES) and "'" not in fatal:
            context.append(", ".join(f"layer '{layer}'" for layer in layers))
    where = f" ({'; '.join(context)})" if context else ""
    return f"Caffe refused the net{where}: {fatal}"


_STEP = "cmpstore-preflight: "
_STEP_LINE = re.compile(r"cmpstore-preflight: (TRAIN|TEST) (build|load|forward)")
_ACTIONS = {"build": "building the net", "load": "loading the pretrained weights", "forward": "reading a batch"}
#: Caffe sources whose checks are about the data a data layer reads.
_DATA_SOURCES = ("data", "db", "transformer", "hdf5", "image", "io.")


def _data_layers_by_phase(net_path: str) -> dict[str, list[str]]:
    try:
        net = netproto.read_prototxt(net_path)
    except CmpstoreError:
        return {}
    by_phase: dict[str, list[str]] = {}
    for layer in data_layers(net):
        for phase in layer.phases:
            by_phase.setdefault(phase, []).append(layer.layer.name)
    return by_phase


def main(argv: list[str]) -> int:
    net_path, weights, mode = argv
    import caffe

    caffe.set_mode_gpu() if mode == "gpu" else caffe.set_mode_cpu()
    for name, phase in (("TRAIN", caffe.TRAIN), ("TEST", caffe.TEST)):
        print(f"{_STEP}{name} build", file=sys.stderr, flush=True)
        net = caffe.Net(net_path, phase)
        print(f"{_STEP}{name} load", file=sys.stderr, flush=True)
        net.copy_from(weights)
        print(f"{_STEP}{name} forward", file=sys.stderr, flush=True)
        net.forward()
        del net
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

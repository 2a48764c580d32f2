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

from ..errors import UsageError

#: A glog fatal line: "F1203 20:10:05.123456 12345 data_layer.cpp:45] Check failed: ..."
_FATAL = re.compile(r"^F\d{4} [\d:.]+\s+\d+ ([\w.]+):\d+\] (.*)$")
#: The layer Caffe was creating or setting up when it stopped.
_LAYER = re.compile(r"\] (?:Creating Layer|Setting up|Creating layer) (.+)$")


def check_in_caffe(net_path: str, weights: str, gpu: bool, env: dict | None = None) -> None:
    """Raise UsageError naming ``net_path`` and the layer if Caffe cannot build, load or run the net."""
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
    raise UsageError(caffe_failure(done.stderr, done.returncode), path=net_path)


def caffe_failure(log: str, status: int) -> str:
    """One line from a failed Caffe child's log: the layer it was at and what its fatal check said."""
    fatal, layer, phase = None, None, None
    for line in log.splitlines():
        found = _LAYER.search(line)
        if found:
            layer = found.group(1).strip()
        found = re.search(r"phase: (TRAIN|TEST)", line)
        if found:
            phase = found.group(1)
        found = _FATAL.match(line.strip())
        if found:
            fatal = found.group(2).strip()
            break
    if fatal is None:
        python_error = [line for line in log.splitlines() if line.strip()][-1:] or [f"exit status {status}"]
        return f"Caffe failed on this net ({python_error[0].strip()})"
    where = f"layer '{layer}'" if layer and f"'{layer}'" not in fatal else None
    context = ", ".join(part for part in (f"{phase} phase" if phase else None, where) if part)
    return f"Caffe refused the net{f' ({context})' if context else ''}: {fatal}"


def main(argv: list[str]) -> int:
    net_path, weights, mode = argv
    import caffe

    caffe.set_mode_gpu() if mode == "gpu" else caffe.set_mode_cpu()
    for phase in (caffe.TRAIN, caffe.TEST):
        net = caffe.Net(net_path, phase)
        net.copy_from(weights)
        net.forward()
        del net
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

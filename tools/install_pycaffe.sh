#!/usr/bin/env bash
# Build BVLC Caffe with its Python interface and cmpstore's CmpConvolution and
# CmpInnerProduct layers (tools/caffe/) into a cache folder, from the PyPI
# source distribution brocolli-caffe==9.0.2 and Debian packages, with the LMDB
# and LevelDB backends and OpenCV (Data and ImageData layers), and Caffe's own
# tools (caffe, convert_imageset, compute_image_mean, upgrade_net_proto_text,
# upgrade_net_proto_binary). Idempotent: a finished build of the same layer
# sources and options (its _caffe.so importable, the Cmp layers registered, the
# tools there) is reused.
#
#   tools/install_pycaffe.sh [--no-apt] [--cuda] [CACHE_DIR]
#
# CPU only by default. --cuda builds the GPU variant, in its own folder, with
# the system CUDA or, without one, nvcc and the CUDA libraries from PyPI wheels
# (tools/caffe/cuda_toolkit.sh), for the GPU architectures in $CUDA_ARCH_BIN
# (default "75 80 86 89 90"); running it needs a GPU and its driver.
# CACHE_DIR defaults to $CMPSTORE_CAFFE_HOME, else ~/.cache/cmpstore/caffe.
# On success the last line printed is the PYTHONPATH entry to use, e.g.
#   export PYTHONPATH="$(tools/install_pycaffe.sh | tail -n 1)"
# The tools' folder is logged on stderr and written, as an absolute path on one
# line, to the file .cmpstore-tools beside that entry: <PYTHONPATH entry>/../.cmpstore-tools.
# The tools run Caffe's layers but not Python ones (type: "Python"): they do not embed Python.
#
# Why not `pip install brocolli-caffe`: its setup.py insists on conda and
# Python <= 3.9. Why CMake flags below: its CMakeLists hard-codes conda include
# paths and links plain -lboost_python.
set -euo pipefail

readonly VERSION=9.0.2
readonly SHA256=c6410cc60bdd6db685d441b66be7df05410f8850ac88d6b75d48ef9b2315c08a
readonly DEBIAN_PACKAGES=(
    cmake g++ make
    libboost-system-dev libboost-thread-dev libboost-filesystem-dev
    libboost-regex-dev libboost-python-dev
    libgoogle-glog-dev libgflags-dev libprotobuf-dev protobuf-compiler
    libhdf5-dev libopenblas-dev libgtest-dev
    liblmdb-dev libleveldb-dev libsnappy-dev
    libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev libopencv-highgui-dev
    libopencv-videoio-dev
)
# Caffe's tools, as make targets (caffe.cpp's is caffe.bin: the library is caffe); each lands in
# build/tools under its source's name.
readonly TOOL_TARGETS=(caffe.bin convert_imageset compute_image_mean upgrade_net_proto_text upgrade_net_proto_binary)
# What a build in the cache was configured for: part of its digest, so that an older build (one
# without the backends or the tools) is rebuilt rather than reused.
readonly BUILD_OPTIONS="lmdb leveldb opencv; tools: ${TOOL_TARGETS[*]}"
# numpy's headers are built in; caffe/__init__ imports caffe.io, which imports skimage.io;
# the generated caffe_pb2 imports google.protobuf (the range cmpstore itself needs).
readonly PYTHON_PACKAGES=(numpy six scikit-image "protobuf>=7.35.1,<8")

use_apt=1
cuda=0
while [ $# -gt 0 ]; do
    case "$1" in
        --no-apt) use_apt=0 ;;
        --cuda) cuda=1 ;;
        -*) echo "install_pycaffe: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
    shift
done
cache=${1:-${CMPSTORE_CAFFE_HOME:-$HOME/.cache/cmpstore/caffe}}
python=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
variant=$([ "$cuda" = 1 ] && echo "-cuda" || true)
src="$cache/brocolli-caffe-$VERSION$variant"
pythonpath="$src/python"
tools="$src/build/tools"
# What the Cmp layers are built from, and with what: a different digest means rebuild.
layers_digest=$( (cd "$here/caffe" && find . -type f ! -name '*.sh' -print0 | LC_ALL=C sort -z \
    | xargs -0 sha256sum; echo "$BUILD_OPTIONS") | sha256sum | cut -c1-16)

log() { echo "install_pycaffe: $*" >&2; }

importable() {
    (cd / && GLOG_minloglevel=2 PYTHONPATH="$pythonpath" "$python" -c \
        'import caffe; assert {"CmpConvolution", "CmpInnerProduct", "ImageData"} <= set(caffe.layer_type_list())' \
        >/dev/null 2>&1)
}

tools_built() {
    local target
    for target in "${TOOL_TARGETS[@]}"; do
        [ -x "$tools/${target%.bin}" ] || return 1
    done
}

if [ -f "$pythonpath/caffe/_caffe.so" ] && [ "$(cat "$src/.cmpstore-layers" 2>/dev/null)" = "$layers_digest" ] \
    && tools_built && importable; then
    log "reusing the build in $src; Caffe's tools are in $tools"
    echo "$pythonpath"
    exit 0
fi

mkdir -p "$cache"
if [ "$use_apt" = 1 ]; then
    missing=()
    for package in "${DEBIAN_PACKAGES[@]}"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "apt-get install ${missing[*]}"
        sudo_cmd=()
        [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
        "${sudo_cmd[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" \
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$cache/apt.log" 2>&1 \
            || { tail -n 20 "$cache/apt.log" >&2; exit 1; }
    fi
fi
"$python" -m pip install --quiet "${PYTHON_PACKAGES[@]}" >&2

tarball="$cache/brocolli-caffe-$VERSION.tar.gz"
if [ ! -f "$tarball" ]; then
    log "downloading brocolli-caffe $VERSION"
    "$python" -m pip download --quiet --no-deps --no-binary :all: \
        --dest "$cache" "brocolli-caffe==$VERSION" >&2
fi
echo "$SHA256  $tarball" | sha256sum --check --quiet - || {
    log "checksum mismatch for $tarball; delete it and rerun"
    exit 1
}
if [ ! -d "$src" ]; then
    unpacked=$(mktemp -d "$cache/unpack.XXXXXX")
    tar -xzf "$tarball" -C "$unpacked"
    # The tarball carries someone else's .git folder; nothing needs it.
    rm -rf "$unpacked/brocolli-caffe-$VERSION/.git"
    mv "$unpacked/brocolli-caffe-$VERSION" "$src"
    rmdir "$unpacked"
fi
# The Cmp layers, the fork's six proto fields and the weights-loaded hook (see the script).
"$python" "$here/caffe/patch_caffe.py" "$src"

# CMakeLists links -lboost_python; Debian names it per Python version.
py_tag=$("$python" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
boost_python=/usr/lib/x86_64-linux-gnu/libboost_python$py_tag.so
if [ ! -e "$boost_python" ]; then
    log "missing $boost_python: Debian's libboost-python-dev must match Python $py_tag"
    exit 1
fi
links="$cache/link"
mkdir -p "$links"
ln -sf "$boost_python" "$links/libboost_python.so"

python_include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
numpy_include=$("$python" -c 'import numpy; print(numpy.get_include())')
if [ "$cuda" = 1 ]; then
    toolkit=$(PYTHON="$python" "$here/caffe/cuda_toolkit.sh" "$cache" | tail -n 1)
    # CUDA 13 compiles for Turing (sm_75) and newer; Caffe's own list stops at Pascal.
    # nvcc gets C++17 (CUDA 13's thrust needs it) and not the host flags, which ask for C++14;
    # -isystem cccl is where the wheels keep nv/target, thrust and cub (a system CUDA has them in include).
    device_flags=(-DCPU_ONLY=OFF -DUSE_CUDNN=OFF -DUSE_NCCL=OFF "-DCUDA_TOOLKIT_ROOT_DIR=$toolkit"
        -DCUDA_ARCH_NAME=Manual "-DCUDA_ARCH_BIN=${CUDA_ARCH_BIN:-75 80 86 89 90}" -DCUDA_ARCH_PTX=90
        -DCUDA_PROPAGATE_HOST_FLAGS=OFF
        "-DCUDA_NVCC_FLAGS=-std=c++17;-isystem;$toolkit/include/cccl;-I/usr/include/hdf5/serial")
else
    device_flags=(-DCPU_ONLY=ON)
fi
build="$src/build"
mkdir -p "$build"
log "configuring in $build"
(
    cd "$build"
    # WITH_PYTHON_LAYER is not in the flags: the patched CMake gives it to _caffe.so alone, as
    # the tools, which do not embed Python, could not link a layer factory compiled with it.
    # CMAKE_NO_BUILTIN_CHRPATH: else CMake ends the build tree's RUNPATH (_caffe.so's and the
    # tools', to find libcaffe.so) with an empty entry, which the loader reads as the current folder.
    cmake .. "${device_flags[@]}" -DBUILD_python=ON -DUSE_HDF5=ON \
        -DUSE_LMDB=ON -DUSE_LEVELDB=ON -DUSE_OPENCV=ON \
        -DBUILD_docs=OFF -DCMAKE_BUILD_TYPE=Release -DCMAKE_NO_BUILTIN_CHRPATH=ON \
        -DANACONDA_HOME=/nonexistent \
        -DPYTHON_EXECUTABLE="$(command -v "$python")" \
        -DCMAKE_CXX_FLAGS="-I$python_include -I$numpy_include -I/usr/include/hdf5/serial" \
        -DCMAKE_SHARED_LINKER_FLAGS="-L$links -L/usr/lib/x86_64-linux-gnu/hdf5/serial" \
        -DCMAKE_EXE_LINKER_FLAGS="-L/usr/lib/x86_64-linux-gnu/hdf5/serial" \
        >"$build/configure.log" 2>&1 || { tail -n 40 "$build/configure.log" >&2; exit 1; }
    log "building pycaffe$variant and Caffe's tools (about 20 minutes on 2 cores); log: $build/make.log"
    # The pycaffe target also copies a caffe_pb2.py generated by Debian's protoc over the
    # shipped one, which predates protobuf 4 ("Descriptors cannot be created directly").
    make -j"$(nproc)" pycaffe "${TOOL_TARGETS[@]}" >"$build/make.log" 2>&1 \
        || { tail -n 40 "$build/make.log" >&2; exit 1; }
)

echo "$tools" >"$src/.cmpstore-tools"
echo "$layers_digest" >"$src/.cmpstore-layers"
if [ "$cuda" = 1 ]; then
    # A GPU build imports only where its libraries load; without a GPU it cannot be run here.
    log "done: the GPU variant is in $src, Caffe's tools in $tools (put $toolkit/lib on LD_LIBRARY_PATH where they run)"
    echo "$pythonpath"
    exit 0
fi
if ! importable; then
    log "built, but 'import caffe' fails or lacks the Cmp layers with PYTHONPATH=$pythonpath:"
    (cd / && PYTHONPATH="$pythonpath" "$python" -c 'import caffe; print(caffe.layer_type_list())') >&2 || true
    exit 1
fi
log "done; Caffe's tools are in $tools"
echo "$pythonpath"

"""The Cmp layers' GPU code compiles with nvcc against Caffe's headers (there is no GPU to run it on here).

Needs a CUDA toolkit (``tools/caffe/cuda_toolkit.sh`` assembles one from PyPI
wheels when the system has none; its root in ``CMPSTORE_CUDA_HOME``) and the
Caffe source tree that ``tools/install_pycaffe.sh`` patched and built (for the
generated ``caffe.pb.h``).  Skips without them; CI sets
``CMPSTORE_REQUIRE_CUDA_COMPILE=1`` so that there it fails instead.
"""

import os
import pathlib
import subprocess

import pytest
from common import caffe_cache, skip_or_fail

pytestmark = pytest.mark.caffe

LAYERS = pathlib.Path(__file__).resolve().parent.parent / "tools" / "caffe"
# Ampere (A100) and Hopper (H100, H200): the GPUs these layers are meant for.
ARCHITECTURES = ("80", "90")


def toolkit() -> pathlib.Path:
    candidates = [os.environ.get("CMPSTORE_CUDA_HOME"), caffe_cache() / "cuda-wheels" / "nvidia" / "cu13"]
    for candidate in candidates:
        if candidate and (pathlib.Path(candidate) / "bin" / "nvcc").exists():
            return pathlib.Path(candidate)
    skip_or_fail(
        "no CUDA toolkit: run tools/caffe/cuda_toolkit.sh and set CMPSTORE_CUDA_HOME to the root it prints",
        "CMPSTORE_REQUIRE_CUDA_COMPILE",
    )


def caffe_tree() -> pathlib.Path:
    for tree in sorted(caffe_cache().glob("brocolli-caffe-*")):
        if (tree / "build" / "include" / "caffe" / "proto" / "caffe.pb.h").exists():
            return tree
    skip_or_fail(
        f"no built Caffe tree under {caffe_cache()}: run tools/install_pycaffe.sh", "CMPSTORE_REQUIRE_CUDA_COMPILE"
    )


def include_flags(cuda: pathlib.Path, tree: pathlib.Path) -> list[str]:
    # The generated caffe.pb.h first: the sdist also ships a stale one in include/.
    folders = [LAYERS / "include", tree / "build" / "include", tree / "include", cuda / "include"]
    flags = [f"-I{folder}" for folder in folders] + ["-I/usr/include/hdf5/serial"]
    return flags + ["-isystem", str(cuda / "include" / "cccl")]


def compile_with(command: list[str], source: pathlib.Path) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{source.name} does not compile:\n{done.stderr[-4000:]}"


@pytest.mark.parametrize("source", sorted(LAYERS.glob("src/**/*.cu")), ids=lambda path: path.name)
def test_kernels_compile_with_nvcc(source, tmp_path):
    cuda = toolkit()
    gencode = [f"-gencode=arch=compute_{arch},code=sm_{arch}" for arch in ARCHITECTURES]
    command = [str(cuda / "bin" / "nvcc"), "-std=c++14", *gencode, *include_flags(cuda, caffe_tree())]
    compile_with([*command, "-c", str(source), "-o", str(tmp_path / "kernels.o")], source)


@pytest.mark.parametrize("source", sorted(LAYERS.glob("src/**/*.cpp")), ids=lambda path: path.name)
def test_layers_compile_for_a_gpu_build(source, tmp_path):
    """Without CPU_ONLY the layers' Forward_gpu and Backward_gpu are real code, calling the kernels."""
    cuda = toolkit()
    command = ["g++", "-std=c++11", "-Wall", *include_flags(cuda, caffe_tree())]
    compile_with([*command, "-c", str(source), "-o", str(tmp_path / "layer.o")], source)

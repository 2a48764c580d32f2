#!/usr/bin/env python3
"""Build cmpstore's Cmp layers into a BVLC Caffe source tree (used by tools/install_pycaffe.sh).

    python3 tools/caffe/patch_caffe.py CAFFE_SOURCE_DIR

The changes, each checked against the exact upstream text it replaces, so a
Caffe whose sources differ fails here with a message instead of building
something else:

* ``src/caffe/proto/caffe.proto``: the DeepCompression-caffe fork's fields,
  ``sparse_ratio``/``class_num``/``quantize_term``, as ConvolutionParameter 19/20/21
  and InnerProductParameter 7/8/9 (the numbers of cmpstore's proto/caffe.proto);
* ``include/caffe/layer.hpp`` and ``src/caffe/net.cpp``: a ``Layer::OnWeightsCopied()``
  hook that ``Net`` calls after copying trained weights into a layer, because the Cmp
  layers compute their mask and clusters from the loaded weights (the fork patches
  ``Net`` for the same reason);
* ``src/caffe/common.cpp``: ``Caffe::DeviceQuery`` reads three ``cudaDeviceProp``
  fields that CUDA 13 removed (``clockRate``, ``deviceOverlap``,
  ``kernelExecTimeoutEnabled``); it asks ``cudaDeviceGetAttribute`` instead, which
  every CUDA since 5.0 has, so a GPU build compiles with the CUDA 13 wheels;
* the build files, for GPU builds: brocolli-caffe is a CPU-only repackaging whose
  CMake defines ``CPU_ONLY`` unconditionally, never includes ``cmake/Cuda.cmake``
  and builds ``_caffe.so`` from the C++ sources alone.  With ``-DCPU_ONLY=OFF`` the
  patched files find CUDA (or stop with an error), compile the ``.cu`` sources and
  link cudart, cuBLAS and cuRAND; a CPU build is configured as before.  Its
  ``proposal_layer.cu`` instantiates a ``Backward_gpu`` that nothing defines; the
  patch defines it as the empty function its CPU twin is.  Six of its layers
  (ReLU6, HardSigmoid, ...) have no GPU code at all; a GPU build runs their CPU
  code instead of leaving ``libcaffe.so`` with undefined symbols;
* the build files, for the data layers and Caffe's tools: the sdist declares
  ``USE_LMDB``, ``USE_LEVELDB`` and ``USE_OPENCV`` but never acts on them, has no
  Caffe library, and leaves out ``tools/``, whose targets link a ``caffe`` target
  that does not exist.  The patched files find LMDB, LevelDB (with Snappy) and
  OpenCV's core, imgproc, imgcodecs, highgui and videoio modules for the options
  that are on, build ``libcaffe.so``, link ``_caffe.so`` and the tools (``caffe``,
  ``convert_imageset``, ...) to it, and compile the layer factory into each of them,
  ``_caffe.so``'s with the Python layer;
* the sources that use OpenCV: the SSD code spells OpenCV 2's C names
  (``CV_LOAD_IMAGE_COLOR``, ``CV_FILLED``, ``CV_FOURCC``, ...), which OpenCV 4 removed;
  they become the ``cv::`` names OpenCV 3 and 4 share, and ``video_data_layer.hpp``
  includes ``opencv2/videoio.hpp`` rather than ``opencv2/opencv.hpp``, which
  includes every module OpenCV was built with (calib3d, dnn, ...);
* a bug of the sdist's ``DataTransformer``: ImageData with ``mean_file`` and
  ``crop_size`` aborted on a check no mean file can pass (see ``SOURCE_FIXES``);
* the layer sources under ``tools/caffe/include`` and ``tools/caffe/src`` are copied
  in, where Caffe's CMake globs pick them up.

Running it again is harmless, and picks up a changed patch: every patch starts
from the sdist's text, kept as ``FILE.orig`` the first time, and only files whose
result changed are rewritten, so make rebuilds only what a change touches.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

PROTO_FIELDS = {
    "message ConvolutionParameter {": (
        "  optional float sparse_ratio = 19 [default = 0];  // cmpstore: the DeepCompression-caffe fork's\n"
        "  optional int32 class_num = 20 [default = 256];  // cmpstore\n"
        "  optional bool quantize_term = 21 [default = false];  // cmpstore\n"
    ),
    "message InnerProductParameter {": (
        "  optional float sparse_ratio = 7 [default = 0];  // cmpstore: the DeepCompression-caffe fork's\n"
        "  optional int32 class_num = 8 [default = 32];  // cmpstore\n"
        "  optional bool quantize_term = 9 [default = false];  // cmpstore\n"
    ),
}

LAYER_HOOK = (
    "  virtual void ToProto(LayerParameter* param, bool write_diff = false);\n",
    "\n"
    "  /**\n"
    "   * @brief Called by Net after it copies trained weights into this layer's blobs.\n"
    "   * (cmpstore: the Cmp layers prune and share the loaded weights here.)\n"
    "   */\n"
    "  virtual void OnWeightsCopied() {}\n",
)

NET_HOOKS = (
    # Binary weights: after the loop that copies one layer's blobs.
    (
        "      target_blobs[j]->FromProto(source_layer.blobs(j), kReshape);\n    }\n",
        "    layers_[target_layer_id]->OnWeightsCopied();  // cmpstore\n",
    ),
    # HDF5 weights: likewise, before the layer's group is closed.
    (
        "          target_blobs[j].get());\n    }\n",
        "    layers_[target_layer_id]->OnWeightsCopied();  // cmpstore\n",
    ),
)

DEVICE_QUERY_HELPER = (
    "void Caffe::DeviceQuery() {\n",
    "// cmpstore: CUDA 13 removed these cudaDeviceProp fields; the attribute API has them all.\n"
    "static int DeviceAttribute(cudaDeviceAttr attribute, int device) {\n"
    "  int value = 0;\n"
    "  CUDA_CHECK(cudaDeviceGetAttribute(&value, attribute, device));\n"
    "  return value;\n"
    "}\n\n",
)
DEVICE_QUERY_FIELDS = {
    "prop.clockRate": "DeviceAttribute(cudaDevAttrClockRate, device)",
    "prop.deviceOverlap": "DeviceAttribute(cudaDevAttrGpuOverlap, device)",
    "prop.kernelExecTimeoutEnabled": "DeviceAttribute(cudaDevAttrKernelExecTimeout, device)",
}

# (file, upstream text, replacement): the GPU build, the data layers and the tools (see the
# module docstring).
BUILD_FILES = (
    (
        "CMakeLists.txt",
        "add_definitions( -DCPU_ONLY=1 )\n",
        "# cmpstore: CPU_ONLY only when asked for, so that -DCPU_ONLY=OFF builds for the GPU.\n"
        "if(NOT DEFINED CPU_ONLY OR CPU_ONLY)\n  add_definitions(-DCPU_ONLY=1)\nendif()\n",
    ),
    (
        "CMakeLists.txt",
        "# add_subdirectory(tools)\n",
        "add_subdirectory(tools)  # cmpstore: Caffe's command-line tools, linked to libcaffe.so\n",
    ),
    (
        "cmake/Dependencies.cmake",
        "# ---[ Google-protobuf\n",
        "# ---[ CUDA (cmpstore: the sdist leaves it out)\n"
        "include(cmake/Cuda.cmake)\n"
        "if(NOT CPU_ONLY AND NOT HAVE_CUDA)\n"
        '  message(FATAL_ERROR "CPU_ONLY=OFF, but no CUDA toolkit was found (set CUDA_TOOLKIT_ROOT_DIR)")\n'
        "endif()\n"
        "if(HAVE_CUDA)\n"
        "  include_directories(SYSTEM ${CUDA_INCLUDE_DIRS})\n"
        "endif()\n\n"
        "# ---[ LMDB, LevelDB and OpenCV (cmpstore: the sdist has the options, but nothing reads them)\n"
        "# Directory-wide definitions and include paths, as nvcc sees only those; Caffe_IO_LIBS is\n"
        "# what libcaffe.so links for them.\n"
        "set(Caffe_IO_LIBS)\n"
        "if(USE_LMDB)\n"
        "  find_package(LMDB REQUIRED)\n"
        "  include_directories(SYSTEM ${LMDB_INCLUDE_DIR})\n"
        "  list(APPEND Caffe_IO_LIBS ${LMDB_LIBRARIES})\n"
        "  add_definitions(-DUSE_LMDB)\n"
        "  if(ALLOW_LMDB_NOLOCK)\n"
        "    add_definitions(-DALLOW_LMDB_NOLOCK)\n"
        "  endif()\n"
        "endif()\n"
        "if(USE_LEVELDB)\n"
        "  find_package(LevelDB REQUIRED)\n"
        "  find_package(Snappy REQUIRED)\n"
        "  include_directories(SYSTEM ${LevelDB_INCLUDES} ${Snappy_INCLUDE_DIR})\n"
        "  list(APPEND Caffe_IO_LIBS ${LevelDB_LIBRARIES} ${Snappy_LIBRARIES})\n"
        "  add_definitions(-DUSE_LEVELDB)\n"
        "endif()\n"
        "if(USE_OPENCV)\n"
        "  # Debian ships OpenCV's CMake package only with all of its modules (libopencv-dev).\n"
        "  find_path(OpenCV_INCLUDE_DIR opencv2/core.hpp PATH_SUFFIXES opencv4 REQUIRED)\n"
        "  include_directories(SYSTEM ${OpenCV_INCLUDE_DIR})\n"
        "  foreach(module core imgproc imgcodecs highgui videoio)\n"
        "    find_library(OpenCV_${module}_LIBRARY opencv_${module} REQUIRED)\n"
        "    list(APPEND Caffe_IO_LIBS ${OpenCV_${module}_LIBRARY})\n"
        "  endforeach()\n"
        '  message(STATUS "Found OpenCV (include: ${OpenCV_INCLUDE_DIR})")\n'
        "  add_definitions(-DUSE_OPENCV)\n"
        "endif()\n\n"
        "# ---[ Google-protobuf\n",
    ),
    (
        "src/caffe/CMakeLists.txt",
        "# add_library(caffe ${srcs})\n"
        "# target_link_libraries(caffe proto -lglog -lprotobuf -lboost_thread -lboost_system"
        " -lboost_filesystem -lboost_regex -lhdf5_hl -lhdf5 -lopenblas)\n"
        "# caffe_default_properties(caffe)\n"
        "# target_include_directories(caffe PUBLIC\n"
        "#                                  $<BUILD_INTERFACE:${Caffe_INCLUDE_DIR}>\n"
        "#                                  $<INSTALL_INTERFACE:include>)\n"
        "# set_target_properties(caffe PROPERTIES\n"
        "#     VERSION   ${CAFFE_TARGET_VERSION}\n"
        "#     SOVERSION ${CAFFE_TARGET_SOVERSION}\n"
        "#     )\n",
        "# cmpstore: libcaffe.so, for _caffe.so (python/) and Caffe's tools (tools/) to link. The layer\n"
        "# factory is not in it: each of them compiles its own, _caffe.so's with the Python layer and\n"
        "# the tools' without, as they do not embed Python (one in both would register every layer\n"
        "# twice). proto stays private: one copy of caffe.pb.cc in the process, here.\n"
        'list(FILTER srcs EXCLUDE REGEX "/src/caffe/layer_factory\\\\.cpp$")\n'
        "add_library(caffe SHARED ${srcs})\n"
        "target_include_directories(caffe PUBLIC ${Caffe_INCLUDE_DIR})\n"
        "target_link_libraries(caffe PRIVATE proto PUBLIC ${Caffe_IO_LIBS} -lglog -lgflags -lprotobuf\n"
        "  -lboost_thread -lboost_system -lboost_filesystem -lboost_regex -lhdf5_hl -lhdf5 -lopenblas)\n"
        "if(HAVE_CUDA)\n"
        "  target_link_libraries(caffe PUBLIC ${CUDA_CUDART_LIBRARY} ${CUDA_curand_LIBRARY} ${CUDA_CUBLAS_LIBRARIES})\n"
        "endif()\n"
        "caffe_default_properties(caffe)\n",
    ),
    (
        "python/CMakeLists.txt",
        "# --[ Caffe library\n\n"
        "# creates 'test_srcs', 'srcs', 'test_cuda', 'cuda' lists\n"
        "caffe_pickup_caffe_sources(${PROJECT_SOURCE_DIR})\n"
        "include_directories(${Caffe_INCLUDE_DIR})\n\n"
        "add_library(pycaffe SHARED ${python_srcs} ${srcs})\n"
        "target_link_libraries(pycaffe proto -lglog -lprotobuf -lboost_thread -lboost_system -lboost_filesystem"
        " -lboost_regex -lboost_python -lhdf5_hl -lhdf5 -lopenblas)\n",
        "# cmpstore: Caffe itself is libcaffe.so (src/caffe); _caffe.so adds the bindings and the layer\n"
        '# factory, with the Python layer (type: "Python").\n'
        "add_library(pycaffe SHARED ${python_srcs} ${PROJECT_SOURCE_DIR}/src/caffe/layer_factory.cpp)\n"
        "target_compile_definitions(pycaffe PRIVATE WITH_PYTHON_LAYER)\n"
        "target_link_libraries(pycaffe caffe -lboost_python)\n",
    ),
    (
        "tools/CMakeLists.txt",
        "# Build each source file independently\n",
        "# cmpstore: libcaffe.so leaves the layer factory to what links it (src/caffe/CMakeLists.txt);\n"
        "# the tools' is compiled once for all of them.\n"
        "add_library(caffe_tools_layer_factory OBJECT ${PROJECT_SOURCE_DIR}/src/caffe/layer_factory.cpp)\n"
        "add_dependencies(caffe_tools_layer_factory proto)\n\n"
        "# Build each source file independently\n",
    ),
    (
        "tools/CMakeLists.txt",
        "  add_executable(${name} ${source})\n"
        "  target_link_libraries(${name} caffe -lglog -lgflags -lprotobuf -lboost_thread -lboost_system"
        " -lboost_filesystem -lboost_regex -lhdf5_hl -lhdf5 -lopenblas)\n",
        "  add_executable(${name} ${source} $<TARGET_OBJECTS:caffe_tools_layer_factory>)\n"
        "  target_link_libraries(${name} caffe)  # cmpstore: libcaffe.so brings the rest\n",
    ),
    (
        "src/caffe/layers/proposal_layer.cu",
        "INSTANTIATE_LAYER_GPU_FUNCS(ProposalLayer);",
        "// cmpstore: declared, instantiated, but never defined in the sdist; proposals have no gradient.\n"
        "template <typename Dtype>\n"
        "void ProposalLayer<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top,\n"
        "    const vector<bool>& propagate_down, const vector<Blob<Dtype>*>& bottom) {}\n\n"
        "INSTANTIATE_LAYER_GPU_FUNCS(ProposalLayer);",
    ),
)

# OpenCV 2's C names that OpenCV 4 removed, and the cv:: names OpenCV 3 and 4 share.
OPENCV4_NAMES = {
    "CV_LOAD_IMAGE_COLOR": "cv::IMREAD_COLOR",
    "CV_LOAD_IMAGE_GRAYSCALE": "cv::IMREAD_GRAYSCALE",
    "CV_IMWRITE_JPEG_QUALITY": "cv::IMWRITE_JPEG_QUALITY",
    "CV_FILLED": "cv::FILLED",
    "CV_FOURCC": "cv::VideoWriter::fourcc",
    "CV_CAP_PROP_FRAME_COUNT": "cv::CAP_PROP_FRAME_COUNT",
    "CV_CAP_PROP_POS_FRAMES": "cv::CAP_PROP_POS_FRAMES",
    "CV_BGR2GRAY": "cv::COLOR_BGR2GRAY",
    "CV_GRAY2BGR": "cv::COLOR_GRAY2BGR",
    "CV_BGR2YCrCb": "cv::COLOR_BGR2YCrCb",
    "CV_YCrCb2BGR": "cv::COLOR_YCrCb2BGR",
    "CV_BGR2HSV": "cv::COLOR_BGR2HSV",
    "CV_BGR2Lab": "cv::COLOR_BGR2Lab",
    "CV_THRESH_BINARY_INV": "cv::THRESH_BINARY_INV",
    "CV_THRESH_OTSU": "cv::THRESH_OTSU",
}
OPENCV4_SOURCES = (
    "src/caffe/util/io.cpp",
    "src/caffe/util/bbox_util.cpp",
    "src/caffe/util/im_transforms.cpp",
    "src/caffe/layers/window_data_layer.cpp",
    "src/caffe/layers/video_data_layer.cpp",
)
# (file, upstream text, replacement): includes that OpenCV 4 lacks or that reach past Debian's packages.
OPENCV4_INCLUDES = (
    # The C API header served only the CV_LOAD_IMAGE_* names.
    ("src/caffe/util/io.cpp", "#include <opencv2/highgui/highgui_c.h>\n", ""),
    ("src/caffe/layers/window_data_layer.cpp", "#include <opencv2/highgui/highgui_c.h>\n", ""),
    (
        "include/caffe/layers/video_data_layer.hpp",
        "#if OPENCV_VERSION == 3\n#include <opencv2/videoio.hpp>\n#else\n#include <opencv2/opencv.hpp>\n"
        "#endif  // OPENCV_VERSION == 3\n",
        "#include <opencv2/videoio.hpp>  // cmpstore: not opencv.hpp, which includes every module\n",
    ),
)


# (file, upstream text, replacement): Caffe bugs a user's net would meet.
SOURCE_FIXES = (
    # Transform(cv::Mat) checks the mean file against the uncropped image, indexes it with the crop's
    # offsets into that image (as Data layers do), then checks it against the cropped image too: no
    # mean file passes both, so ImageData with mean_file and crop_size aborted (BVLC Caffe has the
    # first check only).
    (
        "src/caffe/data_transformer.cpp",
        "  if (has_mean_file) {\n"
        "    CHECK_EQ(cv_cropped_image.rows, data_mean_.height());\n"
        "    CHECK_EQ(cv_cropped_image.cols, data_mean_.width());\n"
        "  }\n",
        "",
    ),
)


def fail(message: str) -> None:
    print(f"patch_caffe: {message}", file=sys.stderr)
    sys.exit(1)


def replaced_once(text: str, anchor: str, replacement: str, path: Path) -> str:
    if text.count(anchor) != 1:
        fail(f"{path}: expected exactly one occurrence of {anchor.strip()!r}, found {text.count(anchor)}")
    return text.replace(anchor, replacement)


def with_proto_fields(text: str, path: Path) -> str:
    for message, fields in PROTO_FIELDS.items():
        start = text.find(message)
        if start < 0:
            fail(f"{path}: no {message!r}")
        end = text.find("\n}\n", start)
        if end < 0:
            fail(f"{path}: {message!r} has no closing brace")
        body = text[start:end]
        for line in fields.splitlines():
            number = line.split("=")[1].split()[0]
            if f"= {number};" in body or f"= {number} " in body:
                fail(f"{path}: {message!r} already uses field number {number}")
        text = text[: end + 1] + fields + text[end + 1 :]
    return text


def with_layer_hook(text: str, path: Path) -> str:
    anchor, addition = LAYER_HOOK
    return replaced_once(text, anchor, anchor + addition, path)


def with_net_hooks(text: str, path: Path) -> str:
    for anchor, addition in NET_HOOKS:
        text = replaced_once(text, anchor, anchor + addition, path)
    return text


def with_device_attributes(text: str, path: Path) -> str:
    anchor, helper = DEVICE_QUERY_HELPER
    gpu_query = text.rfind(anchor)  # the CPU_ONLY build has a stub of the same name before it
    if gpu_query < 0:
        fail(f"{path}: no {anchor.strip()!r}")
    text = text[:gpu_query] + helper + text[gpu_query:]
    for field, replacement in DEVICE_QUERY_FIELDS.items():
        text = replaced_once(text, field, replacement, path)
    return text


def with_opencv4_names(text: str, path: Path) -> str:
    """Replace the removed names in code; the ``#define`` lines of a CV_VERSION_MAJOR == 3 block stay."""
    pattern = re.compile(r"\b(" + "|".join(OPENCV4_NAMES) + r")\b")
    lines = text.splitlines(keepends=True)
    replaced = [
        line if line.lstrip().startswith("#define") else pattern.sub(lambda m: OPENCV4_NAMES[m[1]], line)
        for line in lines
    ]
    if replaced == lines:
        fail(f"{path}: none of OpenCV's removed names to replace")
    return "".join(replaced)


def patch(path: Path, *edits) -> None:
    """Apply ``edits`` to the sdist's own text of ``path``, kept beside it as ``.orig`` the first time.

    Starting from the pristine text every time, a changed patch replaces the old one; a file whose
    patched text is unchanged is not rewritten, so make rebuilds only what a change touches.
    """
    pristine = path.with_name(path.name + ".orig")
    if not pristine.exists():
        if "cmpstore" in path.read_text():
            fail(f"{path} was patched by an older cmpstore: delete this source tree and rerun")
        shutil.copyfile(path, pristine)
    text = pristine.read_text()
    for edit in edits:
        text = edit(text, path)
    if path.read_text() != text:
        path.write_text(text)


CPU_FALLBACK = """#else  // cmpstore: the sdist has no GPU code for this layer; a GPU build runs its CPU code
template <typename Dtype>
void {layer}<Dtype>::Forward_gpu(const vector<Blob<Dtype>*>& bottom, const vector<Blob<Dtype>*>& top) {{
  Forward_cpu(bottom, top);
}}
template <typename Dtype>
void {layer}<Dtype>::Backward_gpu(const vector<Blob<Dtype>*>& top, const vector<bool>& propagate_down,
    const vector<Blob<Dtype>*>& bottom) {{
  Backward_cpu(top, propagate_down, bottom);
}}
"""


def layers_without_gpu_code(root: Path) -> dict[Path, str]:
    """Layer sources that stub their GPU functions for CPU_ONLY while no .cu file defines them."""
    cuda = "".join(path.read_text() for path in (root / "src/caffe/layers").glob("*.cu"))
    found = {}
    for source in sorted((root / "src/caffe/layers").glob("*.cpp")):
        text = source.with_name(source.name + ".orig") if source.with_name(source.name + ".orig").exists() else source
        match = re.search(r"^\s*STUB_GPU\((\w+)\);", text.read_text(), re.MULTILINE)  # not a commented-out one
        if match and f"{match.group(1)}<Dtype>::Forward_gpu" not in cuda and f"({match.group(1)})" not in cuda:
            found[source] = match.group(1)
    return found


def with_cpu_fallback(layer: str):
    def edit(text: str, path: Path) -> str:
        stub = f"STUB_GPU({layer});"
        return replaced_once(text, stub, stub + "\n" + CPU_FALLBACK.format(layer=layer).rstrip("\n"), path)

    return edit


def copy_sources(root: Path) -> None:
    for part in ("include", "src"):
        for source in (HERE / part).rglob("*"):
            if source.is_file():
                target = root / source.relative_to(HERE)
                if not target.exists() or target.read_bytes() != source.read_bytes():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        fail("usage: patch_caffe.py CAFFE_SOURCE_DIR")
    root = Path(argv[1])
    patch(root / "src/caffe/proto/caffe.proto", with_proto_fields)
    patch(root / "include/caffe/layer.hpp", with_layer_hook)
    patch(root / "src/caffe/net.cpp", with_net_hooks)
    patch(root / "src/caffe/common.cpp", with_device_attributes)
    # patch() starts from the sdist's text each time: all of a file's edits go in one call.
    edits: dict[Path, list] = {}
    for name, anchor, replacement in BUILD_FILES + OPENCV4_INCLUDES + SOURCE_FIXES:
        edits.setdefault(root / name, []).append(
            lambda text, path, a=anchor, r=replacement: replaced_once(text, a, r, path)
        )
    for name in OPENCV4_SOURCES:
        edits.setdefault(root / name, []).append(with_opencv4_names)
    for source, layer in layers_without_gpu_code(root).items():
        edits.setdefault(source, []).append(with_cpu_fallback(layer))
    for path, file_edits in edits.items():
        patch(path, *file_edits)
    # The sdist ships a caffe.pb.h from an old protoc, without the Cmp fields; the build generates
    # the right one, but nvcc's include order would find this one first.
    (root / "include/caffe/proto/caffe.pb.h").unlink(missing_ok=True)
    copy_sources(root)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

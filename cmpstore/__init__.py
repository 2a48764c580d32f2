"""cmpstore: Deep Compression storage for Caffe models.

Pruned, weight-shared Caffe weights stored as relative-indexed sparse
entries, codebook indices and a codebook, Huffman-coded, in one checksummed
container (``.cmps``, see docs/FORMAT.md).  Decoding gives back the dense
model bit for bit.
"""

from .api import (
    caffemodel_bytes,
    compress,
    decode,
    detect_format,
    encode,
    export_onnx,
    inspect,
    load_model,
    load_weights,
    prune,
    quantize,
    read_npz,
    report,
    save_model,
    sparse_weights,
    verify,
)
from .compression.transform import compress_weights
from .errors import CmpstoreError, FormatError, ModelError, UsageError

__version__ = "0.1.0"

__all__ = [
    "CmpstoreError",
    "FormatError",
    "ModelError",
    "UsageError",
    "caffemodel_bytes",
    "compress",
    "compress_weights",
    "decode",
    "detect_format",
    "encode",
    "export_onnx",
    "inspect",
    "load_model",
    "load_weights",
    "prune",
    "quantize",
    "read_npz",
    "report",
    "save_model",
    "sparse_weights",
    "verify",
]

"""A layer's weights as a ``scipy.sparse.csr_array``, straight from a ``.cmps`` file's sparse entries.

A sparse-coded blob (codecs 2 and 3) already is a relative-indexed list of
entries: ascending positions and, through the codebook, their values.  The
matrix is built from those, so a layer pruned to 9 % never exists as a dense
array: an fc layer is ``out x in`` as Caffe stores it, a convolution
``out_channels x (in_channels * kh * kw)``, the matrix Caffe's im2col
convolution multiplies.  The entries a codec adds as fillers (zeros that
bridge gaps longer than the index range) are left out; a weight that is
stored as a true zero is too, so the matrix holds exactly the nonzeros.
Blobs coded densely (raw, shuffled deflate or rANS) are decoded and then
made sparse.
"""

from __future__ import annotations

import math

import numpy as np

from .caffe.model import DATA_FIELD, DOUBLE_DATA_FIELD, RAW_DATA_FIELD
from .cmps.reader import CmpsFile
from .codecs.sparse import SparseCodec
from .errors import UsageError


def csr_from_cmps(cmps: CmpsFile, layer: str, blob: int = 0):
    """Blob ``blob`` of ``layer`` as a ``scipy.sparse.csr_array`` (rows: the first axis)."""
    try:
        from scipy import sparse
    except ImportError:
        raise UsageError("sparse matrices need scipy: pip install 'cmpstore[sparse]'") from None
    entry = _entry(cmps, layer, blob)
    shape = entry.layer.blob_shapes[blob]
    # A bias or any 1-D blob is one row.
    rows, columns = (shape[0], math.prod(shape[1:])) if len(shape) >= 2 else (1, math.prod(shape))
    if isinstance(entry.codec, SparseCodec):
        positions, values = entry.codec.decode_entries(entry.payload, entry.count, entry.dtype, entry.where)
    else:
        dense = cmps.decode(entry)
        positions = np.flatnonzero(dense)
        values = dense[positions]
    kept = values != 0
    positions, values = positions[kept], values[kept]
    row_of = positions // columns
    indptr = np.searchsorted(row_of, np.arange(rows + 1), side="left").astype(np.int64)
    indices = (positions - row_of * columns).astype(np.int64)
    return sparse.csr_array((np.ascontiguousarray(values), indices, indptr), shape=(rows, columns))


def _entry(cmps: CmpsFile, layer: str, blob: int):
    named = [entry for entry in cmps.entries if entry.layer.name == layer and entry.address.blob_index == blob]
    if not named:
        have = sorted({entry.layer.name for entry in cmps.entries})
        raise UsageError(
            f"no values for layer '{layer}' blob {blob} (layers with values: {', '.join(have[:20])})",
            path=cmps.path,
        )
    # The value field Caffe would read: double_data before data, raw_data only without data.
    order = {DOUBLE_DATA_FIELD: 0, DATA_FIELD: 1, RAW_DATA_FIELD: 2}
    return min(named, key=lambda entry: order.get(entry.address.value_field, 3))

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

The same matrices go into a sparse ``.npz`` (``cmpstore decode --format npz
--sparse``): every blob of two or more axes as scipy's four CSR arrays
``<layer>/<blob>/data``, ``indices``, ``indptr`` and ``shape`` (the matrix's
two axes) plus ``blob_shape`` (Caffe's), every 1-D blob dense as
``<layer>/<blob>``, as the dense ``.npz`` has it.  :func:`read_npz` gives
back each blob as a ``csr_array`` or an array.
"""

from __future__ import annotations

import math

import numpy as np

from .atomic import Placement, atomic_output
from .caffe.caffemodel import with_raw_values_taken_out
from .caffe.model import DATA_FIELD, DOUBLE_DATA_FIELD, RAW_DATA_FIELD, Model
from .cmps.reader import CmpsFile
from .cmps.sections import FLOAT_RAW_DATA_VERSION
from .codecs import SegmentedCodec, SparseCodec
from .errors import UsageError

#: Caffe reads a blob's ``double_data`` before its ``data``, and ``raw_data`` only without either.
_READ_ORDER = {DOUBLE_DATA_FIELD: 0, DATA_FIELD: 1, RAW_DATA_FIELD: 2}


def csr_from_cmps(cmps: CmpsFile, layer: str, blob: int = 0):
    """Blob ``blob`` of ``layer`` as a ``scipy.sparse.csr_array`` (rows: the first axis)."""
    sparse = _scipy_sparse()
    entry = _entry(cmps, layer, blob)
    values, indices, indptr, shape = _csr_parts(cmps, entry, entry.layer.blob_shapes[blob])
    return sparse.csr_array((values, indices, indptr), shape=shape)


def write_sparse_npz(cmps: CmpsFile, path: str, placement: Placement) -> None:
    """Write every blob of ``cmps`` into a sparse ``.npz`` at ``path`` (see the module docstring)."""
    arrays = {}
    # Files before format version 4 keep FLOAT and DOUBLE raw_data in the skeleton: take them out as values.
    skeleton_values = Model(cmps.skeleton, [], cmps.source_format)
    if cmps.version < FLOAT_RAW_DATA_VERSION:
        skeleton_values = with_raw_values_taken_out(skeleton_values)
    in_skeleton = {payload.address: payload.values for payload in skeleton_values.payloads}
    entries = {entry.address: entry for entry in cmps.entries}
    # Each blob's value fields, found once, not by scanning every address for every blob.
    by_blob: dict[tuple[int, int, int], list] = {}
    for address in [*entries, *in_skeleton]:
        by_blob.setdefault((address.layer_field, address.layer_index, address.blob_index), []).append(address)
    for info in skeleton_values.named_layers(cmps.path):
        for blob_index, shape in enumerate(info.blob_shapes):
            key = f"{info.name}/{blob_index}"
            candidates = by_blob.get((info.layer_field, info.index, blob_index), [])
            if not candidates:
                arrays[key] = np.zeros(0, dtype="<f4")  # as the dense .npz has a blob without values
                continue
            address = min(candidates, key=lambda address: _READ_ORDER.get(address.value_field, 3))
            if len(shape) >= 2:
                source = entries.get(address) or in_skeleton[address]
                values, indices, indptr, matrix_shape = _csr_parts(cmps, source, shape)
                arrays.update(
                    {
                        f"{key}/data": values,
                        f"{key}/indices": indices,
                        f"{key}/indptr": indptr,
                        f"{key}/shape": np.array(matrix_shape, dtype=np.int64),
                        f"{key}/blob_shape": np.array(shape, dtype=np.int64),
                    }
                )
            else:
                values = cmps.decode(entries[address]) if address in entries else in_skeleton[address]
                arrays[key] = values.reshape(shape) if values.size else values
    with atomic_output(path, placement) as stream:
        np.savez(stream, **arrays)


def read_npz(path: str) -> dict:
    """The blobs of a ``.npz`` that cmpstore wrote, dense or sparse: ``{"fc1/0": csr_array or array}``.

    A sparse blob of float16 values comes back as float32 (exactly), which
    scipy needs; every other blob keeps its dtype.
    """
    with np.load(path, allow_pickle=False) as arrays:
        stored = {name: arrays[name] for name in arrays.files}
    blobs = {}
    for name in stored:
        key, _, part = name.rpartition("/")
        if part in ("data", "indices", "indptr", "shape", "blob_shape") and f"{key}/indptr" in stored:
            if part != "data":
                continue
            values = stored[name]
            values = values.astype(np.float32) if values.dtype == np.float16 else values
            shape = tuple(int(axis) for axis in stored[f"{key}/shape"])
            blobs[key] = _scipy_sparse().csr_array(
                (values, stored[f"{key}/indices"], stored[f"{key}/indptr"]), shape=shape
            )
        else:
            blobs[name] = stored[name]
    return blobs


def _scipy_sparse():
    try:
        from scipy import sparse
    except ImportError:
        raise UsageError("sparse matrices need scipy: pip install 'cmpstore[sparse]'") from None
    return sparse


def _csr_parts(cmps: CmpsFile, source, shape: tuple[int, ...]):
    """The CSR arrays of one blob (an entry of ``cmps`` or values), without a dense array for sparse entries."""
    # A bias or any 1-D blob is one row.
    rows, columns = (shape[0], math.prod(shape[1:])) if len(shape) >= 2 else (1, math.prod(shape))
    if isinstance(source, np.ndarray):
        positions = np.flatnonzero(source)
        values = source[positions]
    elif isinstance(source.codec, (SparseCodec, SegmentedCodec)):
        positions, values = source.codec.decode_entries(source.payload, source.count, source.dtype, source.where)
    else:
        dense = cmps.decode(source)
        positions = np.flatnonzero(dense)
        values = dense[positions]
    kept = values != 0
    positions, values = positions[kept], values[kept]
    row_of = positions // columns
    index_type = np.int32 if max(columns, positions.size) < 2**31 else np.int64
    indptr = np.searchsorted(row_of, np.arange(rows + 1), side="left").astype(index_type)
    indices = (positions - row_of * columns).astype(index_type)
    return np.ascontiguousarray(values), indices, indptr, (rows, columns)


def _entry(cmps: CmpsFile, layer: str, blob: int):
    named = [entry for entry in cmps.entries if entry.layer.name == layer and entry.address.blob_index == blob]
    if not named:
        have = sorted({entry.layer.name for entry in cmps.entries})
        raise UsageError(
            f"no values for layer '{layer}' blob {blob} (layers with values: {', '.join(have[:20])})",
            path=cmps.path,
        )
    return min(named, key=lambda entry: _READ_ORDER.get(entry.address.value_field, 3))

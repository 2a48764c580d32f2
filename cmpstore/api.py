"""The public Python API; the command line is a thin shell over it."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import numpy as np

from .atomic import atomic_output, refuse_overwriting_input, write_chunks
from .caffe import caffemodel, hdf5, netproto
from .caffe.model import PAYLOAD_DTYPE, BlobAddress, Model
from .caffe.netproto import LayerInfo
from .cmps import container, dense_writer, encoding
from .codecs import codec_for_id
from .compression import selectors
from .errors import FormatError, ModelError, UsageError, reading
from .progress import silent
from .report import Report, build_report
from .streams.relative_index import MAX_INDEX_BITS, MIN_INDEX_BITS

_PROBE_BYTES = 16


def detect_format(path: str | os.PathLike) -> str:
    """``"cmps"``, ``"hdf5"`` or ``"caffemodel"``, from the file's first bytes."""
    head = _open_head(os.fspath(path))
    if container.looks_like_container(head):
        return "cmps"
    if head.startswith(hdf5.HDF5_SIGNATURE):
        return "hdf5"
    return "caffemodel"


def load_model(path: str | os.PathLike) -> Model:
    """Read a ``.caffemodel``, ``.caffemodel.h5`` or ``.cmps`` file (detected by content).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from cmpstore.synthetic import build_model
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "lenet.caffemodel"
    >>> save_model(build_model(), path)
    >>> model = load_model(path)
    >>> len(model.payloads), model.payloads[0].values.dtype
    (8, dtype('float32'))
    """
    path = os.fspath(path)
    kind = detect_format(path)
    if kind == "cmps":
        return decode_bytes(_read_bytes(path), path)
    with reading(path, ModelError):
        if kind == "hdf5":
            return hdf5.read_hdf5(path)
        buf = _read_bytes(path)
        try:
            model = caffemodel.split_caffemodel(buf, path)
        except ModelError:
            if _looks_like_text(buf):
                raise ModelError(
                    "this is a text file (a prototxt?); cmpstore needs binary .caffemodel weights", path=path
                ) from None
            raise
        check_shapes(model, path)
        return model


def check_shapes(model: Model, path: str | None = None) -> list[LayerInfo]:
    """Check that every payload's length matches its blob's shape; return the layers."""
    net = netproto.parse_skeleton(model.skeleton, path)
    infos = netproto.layer_infos(net)
    by_address = netproto.layers_by_address(infos)
    for payload in model.payloads:
        address = payload.address
        layer = by_address[(address.layer_field, address.layer_index)]
        shape = layer.blob_shapes[address.blob_index]
        expected = netproto.element_count(shape)
        if expected is None:
            raise ModelError(
                f"blob shape {list(shape)} has a negative dimension",
                path=path,
                where=f"{layer.label} blob {address.blob_index}",
            )
        if payload.values.size != expected:
            raise ModelError(
                f"blob holds {payload.values.size} values but its shape {list(shape)} needs {expected}",
                path=path,
                where=f"{layer.label} blob {address.blob_index}",
            )
    return infos


def encode(
    source: str | os.PathLike | Model,
    output: str | os.PathLike | None = None,
    *,
    index_bits: Mapping[str, int] | None = None,
    progress: Callable[[str, str], None] = silent,
    coder: str = "huffman",
) -> bytes:
    """Encode a model into the ``.cmps`` format; write it atomically to ``output`` if given.

    Parameters
    ----------
    source : path or Model
        A ``.caffemodel`` or ``.caffemodel.h5`` file, or a loaded model.
    output : path, optional
        Where to write the encoded file.
    index_bits : mapping, optional
        Fix the relative-index width per layer, keyed by layer name or by the
        shorthands ``conv`` and ``fc`` (a name wins over a shorthand), e.g.
        ``{"conv": 8, "fc": 5}`` for the paper's scheme.  Unnamed layers get
        the width that minimises their size.
    progress : callable, optional
        Called as ``progress(label, detail)`` after each blob.
    coder : {"huffman", "ans"}
        Entropy coder of the sparse streams: canonical Huffman (the paper's)
        or range ANS, which comes within a fraction of a percent of the
        streams' entropy.  Recorded per blob; decoding needs no option.

    Returns
    -------
    bytes
        The encoded file.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from cmpstore.synthetic import build_model
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> encoded = encode(build_model(seed=0), folder / "lenet.cmps")
    >>> encoded[1:5], len(encoded) < 60_000
    (b'CMPS', True)
    """
    model = source if isinstance(source, Model) else load_model(source)
    path = None if isinstance(source, Model) else os.fspath(source)
    if isinstance(source, Model):
        check_shapes(model)
    policy = _index_bits_policy(index_bits, model, path) if index_bits else None
    if coder not in encoding.SPARSE_CODERS:
        raise UsageError(f"unknown coder {coder!r}; use huffman or ans")
    encoded = encoding.encode_model(model, policy, progress, coder)
    if output is not None:
        refuse_overwriting_input(output, path)
        write_chunks(output, [encoded])
    return encoded


def decode_bytes(buf, path: str | None = None, progress: Callable[[str, str], None] = silent) -> Model:
    """Decode the bytes of a ``.cmps`` file; errors name ``path``."""
    with reading(path):
        return encoding.decode_model(buf, progress)


def decode(
    source: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    format: str = "caffemodel",
    deploy: bool = False,
    progress: Callable[[str, str], None] = silent,
) -> Model:
    """Decode a ``.cmps`` file back to a dense model, and write it if ``output`` is given.

    Parameters
    ----------
    format : {"caffemodel", "h5", "npz"}
        Binary caffemodel (byte-identical to a Caffe-written input), Caffe
        HDF5, or numpy ``.npz`` of the dense weights (see :func:`save_model`).
    deploy : bool
        Rename CmpConvolution/CmpInnerProduct to Convolution/InnerProduct and
        drop the fork's fields, so stock Caffe can use the net.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from cmpstore.synthetic import build_model
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = encode(build_model(seed=0), folder / "lenet.cmps")
    >>> model = decode(folder / "lenet.cmps", folder / "lenet.caffemodel")
    >>> (folder / "lenet.caffemodel").stat().st_size, len(model.payloads)
    (1724643, 8)
    """
    path = os.fspath(source)
    if detect_format(path) != "cmps":
        raise FormatError("not a cmpstore file (wrong magic bytes)", path=path)
    model = decode_bytes(_read_bytes(path), path, progress)
    if deploy:
        model = Model(netproto.deploy_skeleton(model.skeleton, path), model.payloads, model.source_format)
    if output is not None:
        refuse_overwriting_input(output, path)
        save_model(model, output, format=format)
    return model


def decode_to_caffemodel(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    deploy: bool = False,
    workers: int | None = None,
    progress: Callable[[str, str], None] = silent,
) -> int:
    """Decode a ``.cmps`` file straight into a binary caffemodel; return the bytes written.

    The fast way to the same file as ``decode(source, output)``: blobs are
    written one by one at their offsets, in parallel for large models, and the
    dense model is never held in memory (see :mod:`cmpstore.cmps.dense_writer`).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from cmpstore.synthetic import build_model
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = encode(build_model(seed=0), folder / "lenet.cmps")
    >>> decode_to_caffemodel(folder / "lenet.cmps", folder / "lenet.caffemodel")
    1724643
    """
    path = os.fspath(source)
    if detect_format(path) != "cmps":
        raise FormatError("not a cmpstore file (wrong magic bytes)", path=path)
    refuse_overwriting_input(output, path)
    buf = _read_bytes(path)
    with reading(path):
        return dense_writer.write_caffemodel(buf, output, deploy=deploy, workers=workers, progress=progress)


def save_model(model: Model, output: str | os.PathLike, *, format: str = "caffemodel") -> None:
    """Write a model atomically: binary ``caffemodel``, Caffe ``h5``, or ``npz``.

    ``npz`` holds the dense weights for deployment outside Caffe, one array
    per blob named ``<layer>/<blob index>``.
    """
    if format == "caffemodel":
        write_chunks(output, caffemodel.join_caffemodel(model))
    elif format == "h5":
        hdf5.write_hdf5(model, output)
    elif format == "npz":
        arrays = {
            f"{name}/{index}": blob
            for name, blobs in weights_by_layer(model).items()
            for index, blob in enumerate(blobs)
        }
        with atomic_output(output) as stream:
            np.savez(stream, **arrays)
    else:
        raise UsageError(f"unknown output format {format!r}; use caffemodel, h5 or npz")


def load_weights(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """The weights of any supported file, by layer name, each blob shaped as in Caffe.

    Reads ``.caffemodel``, ``.caffemodel.h5`` and ``.cmps`` files, without
    Caffe.  Layers without blobs are left out; float64 blobs stay float64.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from cmpstore.synthetic import build_model
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = encode(build_model(seed=0), folder / "lenet.cmps")
    >>> weights = load_weights(folder / "lenet.cmps")
    >>> sorted(weights), weights["conv1"][0].shape, weights["conv1"][1].shape
    (['conv1', 'conv2', 'fc1', 'fc2'], (20, 1, 5, 5), (20,))
    """
    path = os.fspath(path)
    model = load_model(path)
    return weights_by_layer(model, path)


def weights_by_layer(model: Model, path: str | None = None) -> dict[str, list[np.ndarray]]:
    """The model's blobs by layer name, shaped (see :func:`load_weights`)."""
    infos = check_shapes(model, path)
    values = model.payload_map()
    weights: dict[str, list[np.ndarray]] = {}
    for info in infos:
        if not info.blob_shapes:
            continue
        if info.name in weights:
            raise ModelError("duplicate layer name: weights by name would be ambiguous", path=path, where=info.label)
        blobs = []
        for blob_index, shape in enumerate(info.blob_shapes):
            found = [
                values[address]
                for address in (_address(info, blob_index, field) for field in sorted(PAYLOAD_DTYPE, reverse=True))
                if address in values
            ]
            array = found[0] if found else np.zeros(0, dtype="<f4")
            blobs.append(array.reshape(shape) if array.size else array)
        weights[info.name] = blobs
    return weights


def verify(original: str | os.PathLike, encoded: str | os.PathLike) -> list[str]:
    """Compare every blob of two model files bit for bit; return the differences (empty if none).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from cmpstore.synthetic import build_model
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> save_model(build_model(seed=0), folder / "lenet.caffemodel")
    >>> _ = encode(folder / "lenet.caffemodel", folder / "lenet.cmps")
    >>> verify(folder / "lenet.caffemodel", folder / "lenet.cmps")
    []
    """
    first = load_weights(original)
    second = load_weights(encoded)
    problems = []
    for name in sorted(set(first) | set(second)):
        if name not in second:
            problems.append(f"layer '{name}' is missing from {os.fspath(encoded)}")
            continue
        if name not in first:
            problems.append(f"layer '{name}' is missing from {os.fspath(original)}")
            continue
        if len(first[name]) != len(second[name]):
            problems.append(f"layer '{name}': {len(first[name])} blobs against {len(second[name])}")
            continue
        for index, (a, b) in enumerate(zip(first[name], second[name], strict=True)):
            if a.shape != b.shape or a.dtype != b.dtype:
                problems.append(
                    f"layer '{name}' blob {index}: {a.dtype}{list(a.shape)} against {b.dtype}{list(b.shape)}"
                )
            elif a.tobytes() != b.tobytes():
                differing = int(
                    np.count_nonzero(a.reshape(-1).view(f"u{a.itemsize}") != b.reshape(-1).view(f"u{b.itemsize}"))
                )
                problems.append(f"layer '{name}' blob {index}: {differing} of {a.size} values differ")
    return problems


def report(path: str | os.PathLike) -> Report:
    """Where the bytes go, per layer: read from a ``.cmps`` file, or what encoding a model would give.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from cmpstore.synthetic import build_model
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = encode(build_model(seed=0), folder / "lenet.cmps")
    >>> summary = report(folder / "lenet.cmps")
    >>> [row.name for row in summary.layers], summary.total_after == (folder / "lenet.cmps").stat().st_size
    (['conv1', 'conv2', 'fc1', 'fc2'], True)
    """
    path = os.fspath(path)
    buf = _read_bytes(path) if detect_format(path) == "cmps" else encode(path)
    with reading(path):
        return build_report(buf, path)


def inspect(path: str | os.PathLike) -> dict:
    """The header and sections of a ``.cmps`` file, without decoding any weights.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from cmpstore.synthetic import build_model
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = encode(build_model(seed=0), folder / "lenet.cmps")
    >>> [section["kind"] for section in inspect(folder / "lenet.cmps")["sections"]][:3]
    ['NETP', 'BLOB', 'BLOB']
    """
    path = os.fspath(path)
    return inspect_bytes(_read_bytes(path), path)


def inspect_bytes(buf, path: str | None = None) -> dict:
    """:func:`inspect` for the bytes of a ``.cmps`` file."""
    with reading(path):
        sections = container.read_sections(buf)
        contents = encoding.read_container(buf)
    listed = [
        {
            "number": 0,
            "kind": "NETP",
            "offset": sections[0].offset,
            "bytes": sections[0].size_on_disk,
            "source_format": contents.source_format.name.lower(),
            "skeleton_bytes": len(contents.skeleton),
            "layers": len(contents.net.layer) + len(contents.net.layers),
        }
    ]
    for number, (section, blob) in enumerate(zip(sections[1:], contents.blobs, strict=True), start=1):
        address, layer, codec_id, count, _, size = blob
        listed.append(
            {
                "number": number,
                "kind": "BLOB",
                "offset": section.offset,
                "bytes": size,
                "layer": layer.name,
                "type": layer.type,
                "blob": address.blob_index,
                "dtype": PAYLOAD_DTYPE[address.value_field].name,
                "values": count,
                "codec": codec_for_id(codec_id).name,
            }
        )
    return {"file": path, "bytes": len(buf), "version": container.VERSION, "sections": listed}


def _address(info: LayerInfo, blob_index: int, field: int) -> BlobAddress:
    return BlobAddress(info.layer_field, info.index, blob_index, field)


def _index_bits_policy(index_bits: Mapping[str, int], model: Model, path: str | None):
    infos = netproto.layer_infos(netproto.parse_skeleton(model.skeleton, path))
    try:
        selectors.check_names(index_bits, infos, "--index-bits")
    except UsageError as exc:
        raise exc.located(path=path) from None
    for key, bits in index_bits.items():
        if not MIN_INDEX_BITS <= bits <= MAX_INDEX_BITS:
            raise UsageError(f"--index-bits {key}={bits}: must be in {MIN_INDEX_BITS}..{MAX_INDEX_BITS}")
    return lambda layer: selectors.setting_for(index_bits, layer)


def _open_head(path: str) -> bytes:
    try:
        with open(path, "rb") as stream:
            return stream.read(_PROBE_BYTES)
    except FileNotFoundError:
        raise ModelError("no such file", path=path) from None
    except IsADirectoryError:
        raise ModelError("is a directory, not a model file", path=path) from None
    except OSError as exc:
        raise ModelError(f"cannot read ({exc.strerror})", path=path) from None


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as stream:
            buf = stream.read()
    except OSError as exc:
        raise ModelError(f"cannot read ({exc.strerror})", path=path) from None
    if not buf:
        raise ModelError("empty file", path=path)
    return buf


def _looks_like_text(buf: bytes) -> bool:
    sample = buf[:4096]
    return bool(sample) and all(byte in b"\t\n\r" or 32 <= byte < 127 for byte in sample)

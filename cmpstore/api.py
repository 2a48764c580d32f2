"""The public Python API.  Every decision is made here; the command line only parses and prints.

Formats come from :mod:`cmpstore.formats` (inputs by content, outputs by
``format=`` or extension), compression settings are checked against the
bounds of :mod:`cmpstore.compression.settings`, and decoding a ``.cmps``
file to a binary caffemodel streams it blob by blob
(:mod:`cmpstore.cmps.dense_writer`) without holding the dense model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from numbers import Integral
from typing import BinaryIO

import numpy as np

from . import formats, limits
from .atomic import Placement, atomic_output, check_output, write_chunks
from .caffe import caffemodel, netproto
from .caffe.model import Model
from .cmps import container
from .cmps.dense_writer import caffemodel_buffer, write_caffemodel
from .cmps.reader import CmpsFile, open_cmps
from .cmps.writer import SPARSE_CODERS, encode_model, write_model
from .compression import selectors, settings
from .compression.transform import LayerOutcome, compress_weights, settings_from_prototxt
from .errors import CmpstoreError, FormatError, ModelError, UsageError, option, reading
from .progress import silent
from .report import Report, build_report

Progress = Callable[[str, str], None]

__all__ = [
    "caffemodel_array",
    "caffemodel_bytes",
    "check_shapes",
    "compress",
    "compress_weights",
    "decode",
    "decode_bytes",
    "detect_format",
    "encode",
    "export_onnx",
    "import_han",
    "inspect",
    "inspect_bytes",
    "load_model",
    "load_weights",
    "plot",
    "prune",
    "quantize",
    "read_npz",
    "report",
    "save_model",
    "sparse_weights",
    "verify",
    "weights_by_layer",
]


def detect_format(path: str | os.PathLike) -> str:
    """``"cmps"``, ``"hdf5"`` or ``"caffemodel"``, from the file's first bytes."""
    return formats.sniff(formats.Source.open(path)).name


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
    source = formats.Source.open(path)
    return formats.sniff(source).read(source)


def save_model(
    model: Model,
    output: str | os.PathLike,
    *,
    format: str | None = None,
    force: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
) -> None:
    """Write a model atomically: ``caffemodel``, Caffe ``hdf5`` (``h5``), ``npz`` or ``cmps``.

    ``format`` defaults to what the output's extension says, else a binary
    caffemodel.  ``npz`` holds the dense weights for deployment outside
    Caffe, one array per blob named ``<layer>/<blob index>``.  A model with
    FLOAT16 blobs cannot be written as HDF5 (UsageError naming the blob).  An
    existing output is replaced only with ``force``, and never one of
    ``inputs``, the files the model was made from (see :mod:`cmpstore.atomic`).
    """
    formats.for_output(output, format).write(_checked(model), os.fspath(output), Placement.of(force, inputs))


def check_shapes(model: Model, path: str | None = None) -> list:
    """Check that every payload's length matches its blob's shape; return the layers."""
    return model.check_shapes(path)


def encode(
    source: str | os.PathLike | Model,
    output: str | os.PathLike | None = None,
    *,
    index_bits: Mapping[str, int] | None = None,
    progress: Progress = silent,
    coder: str = "huffman",
    max_version: int | None = None,
    force: bool = False,
    smallest: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
) -> bytes | None:
    """Encode a model into the ``.cmps`` format: its bytes, or written atomically to ``output``.

    Without ``output`` the file's bytes are returned.  With ``output`` it is
    written there section by section, never held whole, and None is
    returned (as :func:`decode` does).

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
    max_version : int, optional
        The latest ``.cmps`` format version to write (docs/FORMAT.md,
        "Versioning"), for readers that know no later one: version 3 adds
        the shuffled-rANS codec for dense floats, so ``max_version=2`` codes
        them with shuffled deflate instead; version 5 adds segments and
        DEFLATE streams, which make large blobs decode fast.  A model that needs a later
        version (float16 blobs need 2) is an error.  By default, the latest.
    force : bool
        Replace an existing ``output`` (never the input, nor one of ``inputs``:
        other files the model was made from).
    smallest : bool
        Keep every blob's smallest coding.  By default a large blob keeps one
        that decodes several times faster where that costs at most 1% more
        bytes (see :func:`cmpstore.cmps.writer.encode_model`).

    Returns
    -------
    bytes or None
        The encoded file, or None when it was written to ``output``.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from cmpstore.synthetic import build_model
    >>> encoded = encode(build_model(seed=0))
    >>> encoded[1:5], len(encoded) < 60_000
    (b'CMPS', True)
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> encode(build_model(seed=0), folder / "lenet.cmps")
    >>> (folder / "lenet.cmps").read_bytes() == encoded
    True
    """
    if coder not in SPARSE_CODERS:
        raise UsageError(f"unknown coder {coder!r}; use {' or '.join(SPARSE_CODERS)}")
    max_version = _format_version(max_version)
    path = None if isinstance(source, Model) else os.fspath(source)
    placement = Placement.of(force, [path, *inputs])
    if output is not None:
        check_output(output, placement)
    model = _checked(source) if isinstance(source, Model) else load_model(source)
    policy = _index_bits_policy(index_bits, model, path) if index_bits else None
    try:
        if output is None:
            return encode_model(model, policy, progress, coder, max_version, smallest)
        with atomic_output(output, placement) as stream:
            write_model(model, stream, policy, progress, coder, max_version, smallest)
    except ModelError as exc:
        raise exc.located(path=path) from None
    return None


def decode_bytes(
    buf, path: str | None = None, progress: Progress = silent, *, max_output_bytes: int | None = None
) -> Model:
    """Decode the bytes of a ``.cmps`` file; errors name ``path``.  ``max_output_bytes`` as for :func:`decode`."""
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise UsageError(
            f"decode_bytes takes the bytes of a .cmps file, got {type(buf).__name__}; decode(path) reads a file"
        )
    with reading(path):
        return open_cmps(buf, path, max_output_bytes=max_output_bytes).model(progress)


def decode(
    source: str | os.PathLike,
    output: str | os.PathLike | BinaryIO | None = None,
    *,
    format: str | None = None,
    deploy: bool = False,
    workers: int | None = None,
    progress: Progress = silent,
    max_output_bytes: int | None = None,
    force: bool = False,
    sparse: bool = False,
) -> Model | None:
    """Decode a ``.cmps`` file: into memory, or into ``output``.

    Without ``output`` the dense model is returned.  With ``output`` it is
    written there (atomically) and None is returned; a binary caffemodel,
    the default, is written blob by blob at its offsets, in parallel
    ``workers`` for large models, without ever holding the dense model.
    ``output`` may also be a binary stream (anything with ``write``, such as
    a pipe): the binary caffemodel is written to it in order, piece by piece.

    Parameters
    ----------
    format : {"caffemodel", "hdf5" (or "h5"), "npz"}, optional
        Default: from the output's extension, else a binary caffemodel
        (byte-identical to a caffemodel Caffe wrote).
    deploy : bool
        Rename CmpConvolution/CmpInnerProduct to Convolution/InnerProduct and
        drop the fork's fields, so stock Caffe can use the net.
    workers : int, optional
        Processes to write a binary caffemodel with, at most one per CPU and
        one per blob.  Default: one per CPU for models above 64 MiB, when
        no other thread is running; else the caller's thread alone.
        Decodes in several threads at once are safe.
    max_output_bytes : int, optional
        Refuse, before decoding anything, a file whose decoded size (the net
        plus every blob's values: a dense caffemodel less a few bytes of
        framing per blob) exceeds this; for services that decode untrusted
        files.  The format's own limits (docs/FORMAT.md) always apply.
    force : bool
        Replace an existing ``output`` (never the input).
    sparse : bool
        With an ``npz`` output, write every blob of two or more axes as a
        CSR matrix (scipy's ``data``/``indices``/``indptr``/``shape`` arrays
        under ``<layer>/<blob>/``), built from the sparse entries without a
        dense array; 1-D blobs stay dense.  :func:`read_npz` reads it back.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from cmpstore.synthetic import build_model
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = encode(build_model(seed=0), folder / "lenet.cmps")
    >>> len(decode(folder / "lenet.cmps").payloads)
    8
    >>> decode(folder / "lenet.cmps", folder / "lenet.caffemodel")
    >>> (folder / "lenet.caffemodel").stat().st_size
    1724643
    """
    path = os.fspath(source)
    placement = Placement.of(force, [path])
    if output is not None and hasattr(output, "write"):
        return _decode_to_stream(path, output, format, deploy, progress, max_output_bytes, sparse)
    target = None
    if output is not None:
        target = formats.for_output(output, format)
        check_output(output, placement)
    if sparse and target is not formats.NPZ:
        raise UsageError(f"{option('sparse', 'sparse=True')} needs an .npz output", path=path)
    cmps = _open(path, max_output_bytes)
    if sparse:
        from .sparse_matrix import write_sparse_npz

        with reading(path):
            write_sparse_npz(cmps, os.fspath(output), placement)
        return None
    if target is None:
        with reading(path):
            model = cmps.model(progress)
        return _deployed(model, path) if deploy else model
    with reading(path):
        if target is formats.CAFFEMODEL:
            write_caffemodel(cmps, output, placement, deploy=deploy, workers=workers, progress=progress)
            return None
        model = cmps.model(progress)
    target.write(_deployed(model, path) if deploy else model, os.fspath(output), placement)
    return None


def _decode_to_stream(path, stream, format, deploy, progress, max_output_bytes, sparse) -> None:
    """:func:`decode` into a binary stream: a binary caffemodel, the one format written front to back."""
    if sparse:
        raise UsageError(f"{option('sparse', 'sparse=True')} needs an .npz file, not a stream", path=path)
    if format is not None and formats.by_name(format) is not formats.CAFFEMODEL:
        raise UsageError(
            f"{option('format')} {format} needs a seekable file, not a stream (a stream gets a binary caffemodel)"
        )
    cmps = _open(path, max_output_bytes)
    with reading(path):
        model = cmps.model(progress)
    for chunk in caffemodel.join_caffemodel(_deployed(model, path) if deploy else model):
        stream.write(chunk)


def compress(
    source: str | os.PathLike | Model,
    output: str | os.PathLike | None = None,
    *,
    ratios: Mapping[str, float] | None = None,
    clusters: Mapping[str, int] | None = None,
    init: str = "linear",
    seed: int = 0,
    empty: str = "drop",
    index_bits: Mapping[str, int] | None = None,
    coder: str = "huffman",
    max_version: int | None = None,
    progress: Progress = silent,
    force: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
    smallest: bool = False,
    from_prototxt: str | os.PathLike | None = None,
) -> tuple[bytes | None, list[LayerOutcome]]:
    """Prune, weight-share and encode a model in one go; write the ``.cmps`` to ``output`` if given.

    ``ratios``, ``clusters``, ``init``, ``seed`` and ``empty`` are those of
    :func:`~cmpstore.compression.transform.compress_weights`, and
    ``from_prototxt`` that of :func:`prune`; ``index_bits``, ``coder``,
    ``max_version``, ``smallest`` and ``force`` those of :func:`encode`.
    ``inputs`` names other files the settings came from, which ``output``
    must never be.

    Returns
    -------
    encoded : bytes or None
        The ``.cmps`` file, or None when it was written to ``output`` (as :func:`encode`).
    outcomes : list of LayerOutcome
        What pruning and sharing did to each layer.

    Examples
    --------
    >>> from cmpstore.synthetic import build_model
    >>> encoded, outcomes = compress(build_model(seed=0), ratios={"fc": 0.95}, clusters={"fc": 8})
    >>> [(o.name, o.kept, o.centroids) for o in outcomes]
    [('fc1', 17310, 6), ('fc2', 204, 5)]
    >>> encoded[1:5]
    b'CMPS'

    """
    path = None if isinstance(source, Model) else os.fspath(source)
    inputs = [*inputs, *([from_prototxt] if from_prototxt is not None else [])]
    placement = Placement.of(force, [path, *inputs])
    if output is not None:
        named = next((f for f in formats.FORMATS.values() if os.fspath(output).endswith(f.extensions)), None)
        if named is not None and named is not formats.CMPS:
            raise UsageError(
                f"compress writes a .cmps file, not {named.description}; name a .cmps output "
                "(a pruned and shared model in other formats comes from prune, then quantize)",
                path=os.fspath(output),
            )
        check_output(output, placement)
    ratios, clusters = _settings(from_prototxt, ratios, clusters, ("ratios", "clusters"))
    model = source if isinstance(source, Model) else load_model(source)
    try:
        compressed, outcomes = compress_weights(model, ratios, clusters, init, seed, empty, progress)
    except ModelError as exc:
        raise exc.located(path=path) from None
    encoded = encode(
        compressed,
        output,
        index_bits=index_bits,
        coder=coder,
        max_version=max_version,
        smallest=smallest,
        force=force,
        inputs=[path, *inputs],
    )
    return encoded, outcomes


def prune(
    source: str | os.PathLike | Model,
    output: str | os.PathLike | None = None,
    *,
    ratios: Mapping[str, float] | None = None,
    from_prototxt: str | os.PathLike | None = None,
    progress: Progress = silent,
    force: bool = False,
) -> tuple[Model, list[LayerOutcome]]:
    """Magnitude-prune a model's weight layers (``cmpstore prune``); write it to ``output`` if given.

    ``ratios`` maps layer names, or ``conv``/``fc``, to the fork's
    ``sparse_ratio``; ``from_prototxt`` takes each layer's ``sparse_ratio``
    from the Cmp fields of a net, and a layer named in ``ratios`` overrides
    it.  The output is any model format, by its extension (see
    :func:`save_model`); it is never ``source`` or ``from_prototxt``.

    Returns the pruned model and what pruning did to each layer.
    """
    return _transformed(source, output, from_prototxt, ("ratios",), progress, force, ratios=ratios)


def quantize(
    source: str | os.PathLike | Model,
    output: str | os.PathLike | None = None,
    *,
    clusters: Mapping[str, int] | None = None,
    from_prototxt: str | os.PathLike | None = None,
    init: str = "linear",
    seed: int = 0,
    empty: str = "drop",
    progress: Progress = silent,
    force: bool = False,
) -> tuple[Model, list[LayerOutcome]]:
    """Share each weight layer's surviving weights by 1-D k-means (``cmpstore quantize``); write to ``output``.

    ``clusters`` maps layer names, or ``conv``/``fc``, to the fork's
    ``class_num``; ``from_prototxt`` takes ``class_num`` from each Cmp layer
    of a net whose ``quantize_term`` is set, and a layer named in
    ``clusters`` overrides it.  ``init``, ``seed`` and ``empty`` are those of
    :func:`~cmpstore.compression.transform.compress_weights`; the output as
    for :func:`prune`.

    Returns the shared model and what sharing did to each layer.
    """
    return _transformed(
        source, output, from_prototxt, ("clusters",), progress, force,
        clusters=clusters, init=init, seed=seed, empty=empty,
    )  # fmt: skip


def _transformed(source, output, from_prototxt, takes, progress, force, **settings):
    """What prune and quantize share: the output checked first, the settings merged, the model written."""
    path = None if isinstance(source, Model) else os.fspath(source)
    inputs = [path, *([os.fspath(from_prototxt)] if from_prototxt is not None else [])]
    placement = Placement.of(force, inputs)
    if output is not None:
        check_output(output, placement)  # before the work, not only after it
    ratios, clusters = _settings(from_prototxt, settings.pop("ratios", None), settings.pop("clusters", None), takes)
    model = source if isinstance(source, Model) else load_model(source)
    try:
        transformed, outcomes = compress_weights(model, ratios, clusters, progress=progress, **settings)
    except CmpstoreError as exc:
        raise exc.located(path=path) from None
    if output is not None:
        formats.for_output(output, None).write(transformed, os.fspath(output), placement)
    return transformed, outcomes


def _settings(from_prototxt, ratios, clusters, takes: tuple[str, ...]) -> tuple[dict, dict]:
    """The ratios and clusters to apply: a prototxt's Cmp fields, each layer named in ``ratios``/``clusters`` winning.

    Only the kinds of setting in ``takes`` are kept (prune takes ratios, quantize clusters, compress both).
    """
    from_ratios: dict = {}
    from_clusters: dict = {}
    if from_prototxt is not None:
        with reading(os.fspath(from_prototxt), ModelError):
            from_ratios, from_clusters = settings_from_prototxt(netproto.read_prototxt(from_prototxt))
    merged = {
        "ratios": {**from_ratios, **(ratios or {})} if "ratios" in takes else {},
        "clusters": {**from_clusters, **(clusters or {})} if "clusters" in takes else {},
    }
    if not any(merged.values()):
        named = [option(name) for name in (*takes, "from_prototxt")]
        raise UsageError(f"nothing to do: give {', '.join(named[:-1])} or {named[-1]}")
    return merged["ratios"], merged["clusters"]


def import_han(
    net: str | os.PathLike,
    prototxt: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    force: bool = False,
) -> Model:
    """Read the Deep Compression authors' released ``.net`` file, with the shapes from its deploy ``prototxt``.

    With ``output`` the model is also written, in the format its extension names
    (``.cmps``, ``.caffemodel``, ``.h5``, ``.npz``).  No Caffe is needed.
    """
    from .caffe.han import import_han as read_han

    net = os.fspath(net)
    placement = Placement.of(force, [net, prototxt])
    target = None
    if output is not None:
        target = formats.for_output(output)
        check_output(output, placement)
    with reading(net, ModelError):
        model = read_han(net, prototxt)
    if target is not None:
        target.write(model, os.fspath(output), placement)
    return model


def load_weights(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """The weights of any supported file, by layer name, each blob shaped as in Caffe.

    Reads ``.caffemodel``, ``.caffemodel.h5`` and ``.cmps`` files, without
    Caffe.  Layers without blobs are left out; float64 blobs stay float64,
    and FLOAT16 blobs (OpenCV's ``raw_data``) float16.

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
    return load_model(path).weights_by_layer(path)


def weights_by_layer(model: Model, path: str | None = None) -> dict[str, list[np.ndarray]]:
    """The model's blobs by layer name, shaped (see :func:`load_weights`)."""
    return model.weights_by_layer(path)


def caffemodel_bytes(source: str | os.PathLike | Model, *, deploy: bool = False) -> bytes:
    """The binary caffemodel of a ``.cmps`` file (or any model file, or a Model), without a temporary file.

    What ``cmpstore decode`` writes, as bytes: for OpenCV's
    ``cv2.dnn.readNetFromCaffe(prototxt_bytes, model_bytes)`` or any reader
    that takes a buffer.  ``deploy`` as for :func:`decode`.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from cmpstore.synthetic import build_model
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = encode(build_model(seed=0), folder / "lenet.cmps")
    >>> len(caffemodel_bytes(folder / "lenet.cmps"))
    1724643
    """
    return caffemodel_array(source, deploy=deploy).tobytes()


def caffemodel_array(source: str | os.PathLike | Model, *, deploy: bool = False) -> np.ndarray:
    """:func:`caffemodel_bytes` as a uint8 numpy array, without the copy into a ``bytes`` object.

    A ``.cmps`` file is decoded straight into the array, each blob at its
    place (:func:`cmpstore.cmps.dense_writer.caffemodel_buffer`); what
    ``cv2.dnn.readNetFromCaffe`` takes as it is.
    """
    path = None if isinstance(source, Model) else os.fspath(source)
    opened = formats.Source.open(path) if path is not None else None
    if opened is not None and formats.sniff(opened) is formats.CMPS:
        cmps = _open(opened)  # a pipe's bytes, read once, or the file mapped
        with reading(path):
            return caffemodel_buffer(cmps, deploy=deploy)
    model = _checked(source) if path is None else load_model(path)
    if deploy:
        model = _deployed(model, path)
    return np.frombuffer(caffemodel.caffemodel_bytes(model), dtype=np.uint8)


def export_onnx(
    source: str | os.PathLike,
    prototxt: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    input_shapes: Mapping[str, Iterable[int]] | None = None,
    compact: bool = False,
    force: bool = False,
) -> bytes:
    """The model as ONNX: the deploy ``prototxt`` with the weights of ``source`` (a ``.cmps`` or any model file).

    cmpstore's own converter (:mod:`cmpstore.onnx_export`): opset
    ``onnx_export.OPSET_VERSION``, static shapes from the prototxt (or
    ``input_shapes``), float16 and float64 blobs as float32, every model
    checked by ``onnx.checker`` in full.  An unknown layer type is an error
    naming the layer; an SSD net stops before DetectionOutput, whose inputs
    become the outputs (the model's ``doc_string`` says so).  Returns the
    bytes; with ``output``, also writes them there, atomically.  Needs the
    ``onnx`` extra.  With ``compact``, each weight-shared blob (at most 256
    distinct values) is stored as a codebook and uint8 indices that the
    graph gathers: the same values for a quarter of the bytes, which ONNX
    Runtime loads and OpenCV's ONNX importer does not.
    """
    from . import onnx_export

    path, prototxt = os.fspath(source), os.fspath(prototxt)
    if output is not None:
        check_output(output, Placement.of(force, [path, prototxt]))
    net = netproto.read_prototxt(prototxt)
    shapes = {name: [int(dim) for dim in dims] for name, dims in (input_shapes or {}).items()}
    data = onnx_export.onnx_bytes(net, load_weights(path), input_shapes=shapes, compact=compact)
    if output is not None:
        write_chunks(output, [data], Placement.of(force, [path, prototxt]))
    return data


def read_npz(path: str | os.PathLike) -> dict:
    """The blobs of an ``.npz`` that cmpstore wrote, keyed ``"<layer>/<blob>"``.

    A blob written sparse (``decode(..., format="npz", sparse=True)``) comes
    back as a ``scipy.sparse.csr_array`` (float16 values as float32, which
    scipy needs), every other blob as a numpy array.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from cmpstore.synthetic import build_model
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = encode(build_model(seed=0), folder / "lenet.cmps")
    >>> decode(folder / "lenet.cmps", folder / "lenet.npz", sparse=True)
    >>> blobs = read_npz(folder / "lenet.npz")
    >>> type(blobs["fc1/0"]).__name__, blobs["fc1/0"].shape, blobs["fc1/1"].shape
    ('csr_array', (500, 800), (500,))
    """
    from .sparse_matrix import read_npz as read

    path = os.fspath(path)
    with reading(path):
        return read(path)


def sparse_weights(source: str | os.PathLike, layer: str, blob: int = 0):
    """One blob of a ``.cmps`` file as a ``scipy.sparse.csr_array``, built from its sparse entries.

    An fc layer's weights are ``out x in``; a convolution's ``out_channels x
    (in_channels * kh * kw)``; a 1-D blob is one row.  A sparse-coded blob is
    never made dense on the way (see :mod:`cmpstore.sparse_matrix`).  Needs
    scipy (``pip install 'cmpstore[sparse]'``).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from cmpstore.synthetic import build_model
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = encode(build_model(seed=0), folder / "lenet.cmps")
    >>> fc1 = sparse_weights(folder / "lenet.cmps", "fc1")
    >>> fc1.shape, fc1.nnz
    ((500, 800), 40000)
    """
    from .sparse_matrix import csr_from_cmps

    path = os.fspath(source)
    cmps = _open(path)
    with reading(path):
        return csr_from_cmps(cmps, layer, blob)


def verify(original: str | os.PathLike, other: str | os.PathLike) -> list[str]:
    """Compare every blob of two model files bit for bit; return the differences (empty if none).

    Every value field is compared: a blob's ``data`` and ``double_data`` alike.

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
    from .compare import differences

    original, other = os.fspath(original), os.fspath(other)
    return differences(load_model(original), load_model(other), original, other)


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
    source = formats.Source.open(path)
    fmt = formats.sniff(source)
    if fmt is formats.CMPS:
        cmps = _open(source)
    else:
        model = fmt.read(source)
        with reading(path):
            cmps = open_cmps(encode(model), path)
    with reading(path):
        return build_report(cmps, path)


def plot(path: str | os.PathLike, output: str | os.PathLike, *, force: bool = False) -> Report:
    """Draw the report of ``path`` and its layers' weight histograms into the PNG file ``output``.

    Needs matplotlib (``pip install 'cmpstore[plot]'``).  Returns the report.
    """
    from .plot import plot_report

    placement = Placement.of(force, [path])
    check_output(output, placement)
    summary = report(path)
    plot_report(summary, load_weights(path), output, placement)
    return summary


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
    return _open(path).description(path)


def inspect_bytes(buf, path: str | None = None) -> dict:
    """:func:`inspect` for the bytes of a ``.cmps`` file."""
    with reading(path):
        return open_cmps(buf, path).description(path)


def _open(path: str | formats.Source, max_output_bytes: int | None = None) -> CmpsFile:
    """The ``.cmps`` file at ``path`` (a pipe too), checked, or a FormatError naming it."""
    max_output_bytes = limits.checked_max_output_bytes(max_output_bytes)
    source = path if isinstance(path, formats.Source) else formats.Source.open(path)
    if formats.sniff(source) is not formats.CMPS:
        raise FormatError("not a cmpstore file (wrong magic bytes)", path=source.path)
    with reading(source.path):
        data = source.data if source.data is not None else source.path
        return open_cmps(data, source.path, max_output_bytes=max_output_bytes)


def _format_version(version) -> int:
    """A caller's ``max_version``, checked; None means the latest."""
    if version is None:
        return container.VERSIONS[-1]
    if isinstance(version, bool) or not isinstance(version, Integral) or version not in container.VERSIONS:
        raise UsageError(f"unknown format version {version!r}; use {', '.join(map(str, container.VERSIONS))}")
    return int(version)


def _checked(model: Model) -> Model:
    """A Model from the caller, checked (:meth:`Model.check`: UsageError naming the layer and blob)."""
    if not isinstance(model, Model):
        raise UsageError(f"expected a cmpstore Model, got {type(model).__name__}")
    model.check()
    return model


def _deployed(model: Model, path: str) -> Model:
    return Model(netproto.deploy_skeleton(model.skeleton, path), model.payloads, model.source_format)


def _index_bits_policy(index_bits: Mapping[str, int], model: Model, path: str | None):
    index_bits = settings.checked(index_bits, settings.checked_index_bits, option("index_bits"))
    try:
        selectors.check_names(index_bits, model.layers, option("index_bits"))
    except UsageError as exc:
        raise exc.located(path=path) from None
    return lambda layer: selectors.setting_for(index_bits, layer)

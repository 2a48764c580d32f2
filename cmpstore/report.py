"""Where the bytes went: a per-layer table in the manner of Table 3 of Deep Compression.

For an encoded file every figure is read from it, and the rows plus the
``(net and container)`` row add up to its size on disk, to the byte.  For a
caffemodel the report is that of the file ``encode`` would write.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .caffe import caffemodel
from .cmps.reader import CmpsFile

#: Bumped whenever a key of ``report --json`` changes meaning or goes away.
REPORT_VERSION = 1


@dataclass
class LayerRow:
    """One layer's figures; the weight-related columns describe its first blob."""

    name: str
    type: str
    shape: list[int]
    weights: int
    nonzero_percent: float | None
    distinct_values: int | None
    codebook_entries: int | None
    index_bits: int | None
    index_bits_per_entry: float | None
    weight_bits_per_entry: float | None
    fillers: int | None
    bytes_before: int
    bytes_after: int
    codecs: list[str]
    notes: list[str] = field(default_factory=list)
    # bytes_after split by part; other_bytes is dense blobs plus section framing.
    index_bytes: int = 0
    weight_bytes: int = 0
    codebook_bytes: int = 0

    @property
    def other_bytes(self) -> int:
        return self.bytes_after - self.index_bytes - self.weight_bytes - self.codebook_bytes

    @property
    def ratio(self) -> float:
        return self.bytes_before / self.bytes_after if self.bytes_after else 0.0


@dataclass
class Report:
    file: str
    layers: list[LayerRow]
    structure_before: int  # NetParameter bytes other than blob values
    structure_after: int  # container header and NETP section
    total_before: int  # the dense binary caffemodel
    total_after: int  # the encoded file

    @property
    def ratio(self) -> float:
        return self.total_before / self.total_after

    def to_json(self) -> str:
        """The report as JSON; the keys are documented in docs/REPORT_JSON.md (report_version 1)."""
        document = {"report_version": REPORT_VERSION, **asdict(self)}
        document["ratio"] = round(self.ratio, 3)
        for row, layer in zip(document["layers"], self.layers, strict=True):
            row["ratio"] = round(layer.ratio, 3)
            row["other_bytes"] = layer.other_bytes
        return json.dumps(document, indent=2)


def build_report(cmps: CmpsFile, file: str) -> Report:
    """Report on an encoded file."""
    rows: dict[tuple[int, int], LayerRow] = {}
    payload_bytes = {}
    for entry in cmps.entries:
        # The statistics come from headers; decoding too makes report refuse what decode refuses.
        cmps.check(entry)
        address, layer, stats = entry.address, entry.layer, cmps.describe(entry)
        dense_bytes = entry.count * entry.dtype.itemsize
        payload_bytes[address] = dense_bytes
        row = rows.get((address.layer_field, address.layer_index))
        if row is None:
            row = rows[(address.layer_field, address.layer_index)] = _first_blob_row(layer, stats)
        row.bytes_before += dense_bytes
        row.bytes_after += entry.size
        row.index_bytes += stats.index_bytes
        row.weight_bytes += stats.weight_bytes
        row.codebook_bytes += stats.codebook_bytes
        row.codecs.append(stats.codec)
        if layer.kind and address.blob_index == 0 and stats.codebook_entries is None:
            row.notes.append(_why_not_codebook(stats))
    total_before = caffemodel.caffemodel_size(cmps.skeleton, payload_bytes)
    return Report(
        file=file,
        layers=list(rows.values()),
        structure_before=total_before - sum(payload_bytes.values()),
        structure_after=cmps.header_and_net_bytes,
        total_before=total_before,
        total_after=cmps.size,
    )


def _first_blob_row(layer, stats) -> LayerRow:
    entries = stats.entries or 0
    return LayerRow(
        name=layer.name,
        type=layer.type,
        shape=list(layer.blob_shapes[0]) if layer.blob_shapes else [],
        weights=stats.count,
        nonzero_percent=None if stats.nonzero is None else 100.0 * stats.nonzero / max(stats.count, 1),
        distinct_values=stats.distinct,
        codebook_entries=stats.codebook_entries,
        index_bits=stats.index_bits,
        index_bits_per_entry=stats.index_stream_bits / entries if entries else None,
        weight_bits_per_entry=stats.weight_stream_bits / entries if entries else None,
        fillers=stats.fillers,
        bytes_before=0,
        bytes_after=0,
        codecs=[],
    )


def _why_not_codebook(stats) -> str:
    if stats.codec == "sparse":
        return stats.note
    return f"weights stored {stats.codec}: smaller than sparse coding (nonzero {stats.nonzero} of {stats.count})"


_COLUMNS = [
    ("layer", "<"),
    ("type", "<"),
    ("shape", "<"),
    ("weights", ">"),
    ("nonzero", ">"),
    ("distinct", ">"),
    ("codebook", ">"),
    ("idx bits", ">"),
    ("idx b/entry", ">"),
    ("wt b/entry", ">"),
    ("fillers", ">"),
    ("before B", ">"),
    ("after B", ">"),
    ("ratio", ">"),
]


def format_table(report: Report) -> str:
    """The report as an aligned text table, with notes below it."""

    def number(value, spec=","):
        return "-" if value is None else format(value, spec)

    rows = []
    for row in report.layers:
        rows.append(
            [
                row.name,
                row.type,
                "x".join(map(str, row.shape)) or "-",
                number(row.weights),
                "-" if row.nonzero_percent is None else f"{row.nonzero_percent:.1f}%",
                number(row.distinct_values),
                number(row.codebook_entries),
                number(row.index_bits),
                number(row.index_bits_per_entry, ".2f"),
                number(row.weight_bits_per_entry, ".2f"),
                number(row.fillers),
                number(row.bytes_before),
                number(row.bytes_after),
                f"{row.ratio:.1f}x",
            ]
        )
    blank = [""] * (len(_COLUMNS) - 4)
    structure_ratio = report.structure_before / report.structure_after
    rows.append(
        ["(net and container)", *blank, *_sizes(report.structure_before, report.structure_after, structure_ratio)]
    )
    rows.append(["total", *blank, *_sizes(report.total_before, report.total_after, report.ratio)])
    lines = _aligned([name for name, _ in _COLUMNS], rows, {i for i, (_, align) in enumerate(_COLUMNS) if align == "<"})
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    for row in report.layers:
        for note in row.notes:
            lines.append(f"note: {row.name}: {note}")
    return "\n".join(lines)


def format_outcomes(outcomes) -> str:
    """What prune/quantize did per layer, with the mean squared quantization error."""
    header = ["layer", "type", "weights", "kept", "ratio", "clusters", "in use", "init", "iterations", "MSE"]
    rows = [
        [
            o.name,
            o.type,
            f"{o.weights:,}",
            f"{100.0 * o.kept / max(o.weights, 1):.1f}%",
            "-" if o.ratio is None else f"{o.ratio:g}",
            "-" if o.clusters is None else str(o.clusters),
            "-" if o.centroids is None else str(o.centroids),
            o.init or "-",
            "-" if o.iterations is None else str(o.iterations),
            "-" if o.mse is None else f"{o.mse:.3e}",
        ]
        for o in outcomes
    ]
    lines = _aligned(header, rows, {0, 1, 7})
    return "\n".join(lines)


def _sizes(before: int, after: int, ratio: float) -> list[str]:
    return [f"{before:,}", f"{after:,}", f"{ratio:.1f}x"]


def _aligned(header: list[str], rows: list[list[str]], left: set[int]) -> list[str]:
    """Columns padded to their widest cell (``left`` ones left-aligned), a rule under the header."""
    widths = [max(len(title), *(len(row[i]) for row in rows)) for i, title in enumerate(header)]
    lines = [
        "  ".join(
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()
        for cells in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    return lines

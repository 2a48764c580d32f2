"""Pictures of a report: weight histograms with their centroids, and where the bytes went.

The histograms follow Figures 4 and 6 of Deep Compression: the distribution
of each compressed layer's nonzero weights with its codebook centroids
marked.  The bar chart splits each layer's encoded bytes into index stream,
weight stream, codebook and other blobs, with the layer's compression ratio
on its bar.  Needs matplotlib (``pip install 'cmpstore[plot]'``).
"""

from __future__ import annotations

import math
import os

import numpy as np

from .atomic import NEW_FILE, Placement, atomic_output
from .errors import UsageError, option
from .report import Report

_PARTS = (
    ("index_bytes", "index stream", "#4C72B0"),
    ("weight_bytes", "weight stream", "#DD8452"),
    ("codebook_bytes", "codebook", "#55A868"),
    ("other_bytes", "dense blobs and framing", "#8C8C8C"),
)


def plot_report(
    report: Report, weights: dict[str, list[np.ndarray]], output: str | os.PathLike, placement: Placement = NEW_FILE
) -> None:
    """Draw ``report`` (and the histograms of ``weights``) into a PNG file, atomically."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError(f"{option('plot')} needs matplotlib: pip install 'cmpstore[plot]'") from None
    coded = [row for row in report.layers if row.codebook_entries]
    columns = min(4, max(1, len(coded)))
    rows = math.ceil(len(coded) / columns)
    figure = plt.figure(figsize=(4.2 * columns + 1, 3.2 * rows + 4.5), layout="constrained")
    grid = figure.add_gridspec(rows + 1, columns, height_ratios=[3] * rows + [4.5])
    figure.suptitle(
        f"{os.path.basename(report.file)}: {report.total_before:,} B -> {report.total_after:,} B ({report.ratio:.1f}x)"
    )
    for index, row in enumerate(coded):
        axes = figure.add_subplot(grid[index // columns, index % columns])
        values = weights[row.name][0].reshape(-1)
        nonzero = values[values.view(f"u{values.itemsize}") != 0]
        nonzero = nonzero[np.isfinite(nonzero)]  # a histogram has no bin for NaN or infinity
        if nonzero.size:
            axes.hist(nonzero, bins=100, color="#4C72B0")
        else:
            axes.text(0.5, 0.5, "no finite nonzero weights", ha="center", va="center", transform=axes.transAxes)
        centroids = np.unique(nonzero)
        axes.plot(centroids, np.zeros_like(centroids), "|", color="#C44E52", markersize=12, label="centroids")
        axes.set_title(f"{row.name}: {row.distinct_values} centroids, {row.nonzero_percent:.0f}% nonzero", fontsize=9)
        axes.set_xlabel("weight value", fontsize=8)
        axes.set_ylabel("count", fontsize=8)
        axes.tick_params(labelsize=7)
        if index == 0:
            axes.legend(fontsize=7, loc="upper right")
    _bytes_chart(figure.add_subplot(grid[rows, :]), report)
    try:
        with atomic_output(output, placement) as stream:
            figure.savefig(stream, format="png", dpi=100)
    finally:
        plt.close(figure)


def _bytes_chart(axes, report: Report) -> None:
    names = [row.name for row in report.layers]
    positions = np.arange(len(names))
    bottom = np.zeros(len(names))
    for key, label, color in _PARTS:
        heights = np.array([getattr(row, key) for row in report.layers], dtype=float) / 1024
        axes.bar(positions, heights, bottom=bottom, color=color, label=label, width=0.7)
        bottom += heights
    for position, height, row in zip(positions, bottom, report.layers, strict=True):
        axes.annotate(
            f"{row.ratio:.1f}x",
            (position, height),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    axes.set_xticks(
        positions, names, rotation=45 if len(names) > 8 else 0, ha="right" if len(names) > 8 else "center", fontsize=8
    )
    axes.set_ylabel("encoded size (KiB)")
    axes.set_title("bytes per layer after encoding, and each layer's compression ratio", fontsize=10)
    axes.set_ylim(0, bottom.max() * 1.15 if len(bottom) else 1)
    axes.legend(fontsize=8, loc="upper left")

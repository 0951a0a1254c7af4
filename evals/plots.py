"""Plots every evaluation writes with `--plot`: PNG bytes, drawn headless on a bare matplotlib
`Figure` (no pyplot, so a caller's backend and open figures are left alone), so they go into a
run directory with the rest of its results in one atomic write."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence


def grouped_bars(
    title: str,
    panels: Mapping[str, Mapping[str, Sequence[float | None]]],
    categories: Sequence[str],
    ylabel: str,
    ylim: tuple[float, float] | None = (0.0, 1.1),
) -> bytes:
    """One panel per entry of `panels` (panel title -> series label -> one value per category),
    side by side; each category a group of bars, one per series, its value printed above it.
    A missing value (None) leaves its bar out."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5 * len(panels), 4))
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)
    for ax, (panel, series) in zip(axes[0], panels.items()):
        width = 0.8 / max(len(series), 1)
        for k, (label, values) in enumerate(series.items()):
            xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(categories))]
            shown = [(x, v) for x, v in zip(xs, values) if v is not None]
            bars = ax.bar([x for x, _ in shown], [v for _, v in shown], width, label=label)
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
        ax.set_xticks(range(len(categories)), categories)
        ax.set_title(panel)
        if ylim:
            ax.set_ylim(*ylim)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(loc="upper right", fontsize=8)
    figure.suptitle(title)
    return _png(figure)


def histograms(title: str, series: Mapping[str, Sequence[float]], xlabel: str) -> bytes:
    """Overlaid histograms on shared bins, one per series (labelled with its count)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    values = [v for vs in series.values() for v in vs]
    bounds = (min(values), max(values)) if values else (0.0, 1.0)
    for label, vs in series.items():
        if vs:
            ax.hist(vs, bins=30 if bounds[1] > bounds[0] else 1, range=bounds, alpha=0.55, label=f"{label} ({len(vs)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _png(figure)


def line_plot(
    title: str, lines: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str
) -> bytes:
    """One line per entry of `lines` (label -> (xs, ys)) on shared axes."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    for label, (xs, ys) in lines.items():
        ax.plot(xs, ys, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _png(figure)


def _png(figure) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()

"""``heatmap.png`` of a sweep's report: mean AP over two swept settings (γ × α by default)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retina.analysis.groups import SeedGroup
from retina.analysis.table import AXIS_LABELS, ReportTable, TableRow
from retina.analysis.table_format import format_value
from retina.utils.io import save_figure_atomic

__all__ = ["heatmap_axes", "plot_heatmap"]


def heatmap_axes(table: ReportTable) -> tuple[str | None, str | None]:
    """γ × α when that tells the runs apart, else the first pair of swept columns that does
    (e.g. loss × π for the prior-init sweep), else γ × α or the first two columns anyway.
    Runs are told apart per row of ``table.md`` (the seeds of a row share its cell)."""
    cols = table.columns
    units: Sequence[TableRow | SeedGroup] = table.groups or table.rows
    pairs = [("gamma", "alpha")] + [(a, b) for i, a in enumerate(cols) for b in cols[i + 1:]]
    for y_key, x_key in pairs:
        if y_key in cols and x_key in cols:
            cells = [(_cell(r, y_key), _cell(r, x_key)) for r in units]
            if len(set(cells)) == len(cells):
                return y_key, x_key
    if all(any(k in r.axes for r in table.rows) for k in ("gamma", "alpha")):
        return "gamma", "alpha"
    if len(cols) >= 2:
        return cols[0], cols[1]
    return (cols[0], None) if cols else (None, None)


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, float(value)) if isinstance(value, int | float) else (1, format_value(value))


def _cell(row: TableRow | SeedGroup, key: str | None) -> str:
    if key is None:
        return ""
    return format_value(row.axes[key]) if key in row.axes else "–"


def plot_heatmap(table: ReportTable, path: Path) -> None:
    """``heatmap.png``: mean AP of each row's finished seeds over γ (rows) × α (columns).

    When γ × α does not tell the runs apart, another pair of swept axes is used (see
    :func:`heatmap_axes`). Cells of failed or
    unfinished runs read as such; cells no run covered stay blank. Where several runs share a
    cell, the best AP is shown.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    y_key, x_key = heatmap_axes(table)
    cells = table.groups or [SeedGroup(r.axes, [r.run]) for r in table.rows]
    ys = sorted({_cell(g, y_key) for g in cells})
    xs = sorted({_cell(g, x_key) for g in cells})
    raw = {_cell(g, k): g.axes.get(k) for g in cells for k in (y_key, x_key)}
    ys.sort(key=lambda v: _sort_key(raw.get(v, v)))
    xs.sort(key=lambda v: _sort_key(raw.get(v, v)))
    grid = [[math.nan] * len(xs) for _ in ys]
    notes: dict[tuple[int, int], str] = {}
    for group in cells:
        i, j = ys.index(_cell(group, y_key)), xs.index(_cell(group, x_key))
        stat = group.stats.get("AP")
        if stat is not None:
            grid[i][j] = stat.mean if math.isnan(grid[i][j]) else max(grid[i][j], stat.mean)
        elif (i, j) not in notes:
            notes[(i, j)] = group.runs[0].status
    fig = Figure(figsize=(1.1 * len(xs) + 2.5, 0.7 * len(ys) + 2.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    finite = [v for line in grid for v in line if math.isfinite(v)]
    image = ax.imshow(grid, cmap="viridis", vmin=min(finite, default=0.0),
                      vmax=max(finite, default=1.0), aspect="auto")
    fig.colorbar(image, ax=ax, label="AP (%)")
    middle = (min(finite, default=0.0) + max(finite, default=1.0)) / 2
    for i, line in enumerate(grid):
        for j, value in enumerate(line):
            text = f"{value:.1f}" if math.isfinite(value) else notes.get((i, j), "")
            dark = math.isfinite(value) and value < middle
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    ax.set_xticks(range(len(xs)), xs)
    ax.set_yticks(range(len(ys)), ys)
    ax.set_xlabel(AXIS_LABELS.get(x_key, x_key) if x_key else "")
    ax.set_ylabel(AXIS_LABELS.get(y_key, y_key) if y_key else "")
    ax.set_title(f"AP over {ax.get_ylabel()} × {ax.get_xlabel()}\n{table.title}", fontsize=9)
    fig.tight_layout()
    save_figure_atomic(fig, path)

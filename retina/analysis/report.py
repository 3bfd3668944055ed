"""A sweep's report (``retina-report DIR``): the paper's Table 1 from a multirun directory.

A multirun directory (``retina-train -m +experiment=NAME``) holds one folder per job,
``DIR/0/``, ``DIR/1/``, ... with ``.hydra/overrides.yaml`` and, once the job finished,
``metrics.json``, plus ``DIR/multirun.yaml``. The report reads every job, including the ones
that failed, are still running or never started (a failed job stops Hydra's basic sweeper, so
the rest of the grid is recovered from ``multirun.yaml``), and writes

- ``DIR/table.md``: the swept values, AP, AP50, AP75 (best of the block in bold), the paper's
  numbers beside ours where the run matches a row of the paper's Table 1, wall time, status;
- ``DIR/table.csv``: the same, one row per job, all COCO metrics;
- ``DIR/heatmap.png``: AP over γ × α (or over the two swept axes when γ and α are fixed).

Reading (:func:`collect_runs`), matching and formatting (:func:`build_table`,
:func:`format_markdown`) are separate functions; :mod:`retina.cli.report` only wires them.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retina.analysis.paper import TABLE1, TABLE1_BLOCKS, PaperRow
from retina.analysis.runs import Run, collect_runs, run_axes
from retina.utils.io import save_figure_atomic, write_text_atomic

__all__ = [
    "AXIS_LABELS",
    "METRICS",
    "ReportTable",
    "TableRow",
    "build_table",
    "format_markdown",
    "heatmap_axes",
    "infer_block",
    "match_paper_row",
    "plot_heatmap",
    "write_csv",
    "write_report",
]

METRICS: tuple[str, ...] = ("AP", "AP50", "AP75")
"""The metrics shown in ``table.md`` (``table.csv`` adds every metric found)."""

AXIS_LABELS: dict[str, str] = {
    "loss": "loss",
    "gamma": "γ",
    "alpha": "α",
    "prior_prob": "π",
    "num_scales": "#sc",
    "num_ratios": "#ar",
    "ohem_batch": "OHEM batch",
    "ohem_pos_fraction": "OHEM pos. fraction",
    "ohem_nms": "OHEM NMS",
}
"""Column headers for the ablation axes that :func:`retina.analysis.runs.run_axes` extracts."""

_EXPERIMENT_BLOCKS = {
    "table1a_alpha_ce": "a",
    "table1b_gamma_alpha": "b",
    "table1c_anchors": "c",
    "table1d_ohem": "d",
}


_TITLES = {"prior_init": "Prior initialisation: CE and FL with and without π = 0.01"}


@dataclass
class TableRow:
    """One job of the sweep as a row of the report."""

    run: Run
    axes: dict[str, Any]
    paper: PaperRow | None = None
    bold: set[str] = field(default_factory=set)


@dataclass
class ReportTable:
    """The report: its rows, the columns that vary, and which paper block it mirrors."""

    title: str
    block: str | None
    columns: list[str]
    rows: list[TableRow]


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return str(a).lower() == str(b).lower()
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    except (TypeError, ValueError):
        return False


def _ohem_method(axes: dict[str, Any]) -> str | None:
    """Block (d)'s method: "FL", "OHEM" (unconstrained) or "OHEM 1:3" (positive fraction 1/4)."""
    loss = str(axes.get("loss", "")).lower()
    if "ohem" not in loss:
        return "FL" if "focal" in loss and "star" not in loss else None
    fraction = axes.get("ohem_pos_fraction")
    if fraction is None:
        return "OHEM"
    return "OHEM 1:3" if _close(fraction, 0.25) else None


def match_paper_row(axes: dict[str, Any], block: str | None = None) -> PaperRow | None:
    """The paper's Table 1 row that a run reproduces, if any.

    A run matches a row when it keeps the paper's π = 0.01 (and 3 x 3 anchors outside block
    c) and every value of the row's setting equals the run's: γ, α for blocks a/b; scales and
    aspect ratios for c, where the loss must also be the paper's FL γ = 2, α = .25; for d the
    method, and for OHEM its batch, positive fraction (unconstrained or 1:3, i.e. 0.25) and
    NMS threshold. With ``block=None`` blocks b, a, c are tried in that order.

    Args:
        axes: the run's ablation values from :func:`retina.analysis.runs.run_axes`.
        block: ``"a"``-``"d"`` or ``None``.
    """
    blocks = [block] if block else ["b", "a", "c"]
    for name in blocks:
        for row in TABLE1.get(name, ()):
            if _matches(row, axes):
                return row
    return None


def _paper_defaults(row: PaperRow, axes: dict[str, Any]) -> bool:
    """Settings every paper row shares unless its block varies them: π = 0.01, 3 x 3 anchors."""
    if "prior_prob" in axes and not _close(axes["prior_prob"], 0.01):
        return False
    if row.block == "c":
        return True
    return all(_close(axes.get(k, 3), 3) for k in ("num_scales", "num_ratios"))


def _matches(row: PaperRow, axes: dict[str, Any]) -> bool:
    if not _paper_defaults(row, axes):
        return False
    if row.block in ("a", "b"):
        gamma = axes.get("gamma", 0.0 if row.block == "a" else None)
        want_gamma = row.setting.get("gamma", 0.0)
        return (
            gamma is not None
            and _close(gamma, want_gamma)
            and _close(axes.get("alpha"), row.setting["alpha"])
        )
    if row.block == "c":
        default_loss = _close(axes.get("gamma", 2.0), 2.0) and _close(
            axes.get("alpha", 0.25), 0.25
        )
        return (
            default_loss
            and _close(axes.get("num_scales"), row.setting["num_scales"])
            and _close(axes.get("num_ratios"), row.setting["num_ratios"])
        )
    method = _ohem_method(axes)
    if method != row.setting["method"]:
        return False
    if method == "FL":
        return _close(axes.get("gamma"), 2.0) and _close(axes.get("alpha"), 0.25)
    return _close(axes.get("ohem_batch"), row.setting["batch_size"]) and _close(
        axes.get("ohem_nms"), row.setting["nms_thresh"]
    )


def infer_block(runs: Sequence[Run]) -> str | None:
    """The paper block a sweep mirrors: from its experiment name, else from what it varies."""
    for run in runs:
        if run.experiment in _EXPERIMENT_BLOCKS:
            return _EXPERIMENT_BLOCKS[run.experiment]
        if run.experiment:
            return None
    varying = _varying_axes([run_axes(r) for r in runs])
    if {"num_scales", "num_ratios"} & set(varying):
        return "c"
    if {"ohem_batch", "ohem_pos_fraction", "ohem_nms"} & set(varying):
        return "d"
    if "gamma" in varying:
        return "b"
    if "alpha" in varying:
        return "a"
    return None


def _varying_axes(all_axes: Sequence[dict[str, Any]]) -> list[str]:
    keys: list[str] = []
    for axes in all_axes:
        keys += [k for k in axes if k not in keys]
    varying = []
    for key in keys:
        values = {repr(a[key]) for a in all_axes if key in a}
        if len(values) > 1:
            varying.append(key)
    return varying


def build_table(runs: Sequence[Run], title: str = "") -> ReportTable:
    """Turn collected runs into report rows: columns, paper matches and bold maxima.

    The columns are the ablation axes that vary across jobs (in :data:`AXIS_LABELS` order),
    plus any raw override that varies but no axis explains. The best AP, AP50 and AP75 among
    finished runs are marked bold (ties included).
    """
    block = infer_block(runs)
    all_axes = [run_axes(r) for r in runs]
    varying = _varying_axes(all_axes)
    columns = [k for k in AXIS_LABELS if k in varying]
    keys = [tuple(repr(a.get(k)) for k in columns) for a in all_axes]
    if not columns or len(set(keys)) < len(keys):
        columns += [k for k in varying if k not in AXIS_LABELS]
    if not columns:
        columns = [k for k in AXIS_LABELS if any(k in a for a in all_axes)][:4]
    rows = [
        TableRow(run=r, axes=a, paper=match_paper_row(a, block))
        for r, a in zip(runs, all_axes, strict=True)
    ]
    for metric in METRICS:
        values = [row.run.metrics.get(metric) for row in rows if row.run.status == "done"]
        values = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
        if not values:
            continue
        best = max(values)
        for row in rows:
            if row.run.status == "done" and _close(row.run.metrics.get(metric), best):
                row.bold.add(metric)
    if not title:
        experiment = next((r.experiment for r in runs if r.experiment), None)
        title = (f"Table 1 {TABLE1_BLOCKS[block]}" if block
                 else _TITLES.get(experiment or "", f"Ablation {experiment or ''}".strip()))
    return ReportTable(title=title, block=block, columns=columns, rows=rows)


def _fmt_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt_value(v) for v in value) + "]"
    return str(value)


def _fmt_time(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def _fmt_status(run: Run) -> str:
    text = run.status if not run.reason else f"{run.status}: {run.reason}"
    return text.replace("|", "\\|").replace("\n", " ")


def format_markdown(table: ReportTable) -> str:
    """``table.md``: a Markdown table in the paper's Table 1 layout, with a summary line."""
    header = [AXIS_LABELS.get(c, c) for c in table.columns]
    header += list(METRICS) + ["paper AP / AP50 / AP75", "time", "status"]
    lines = [f"# {table.title}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for row in table.rows:
        cells = [_fmt_value(row.axes[c]) if c in row.axes else "–" for c in table.columns]
        for metric in METRICS:
            value = row.run.metrics.get(metric)
            text = f"{value:.1f}" if isinstance(value, int | float) else "–"
            cells.append(f"**{text}**" if metric in row.bold else text)
        paper = row.paper
        cells.append(f"{paper.ap:.1f} / {paper.ap50:.1f} / {paper.ap75:.1f}" if paper else "")
        cells.append(_fmt_time(row.run.wall_time))
        cells.append(_fmt_status(row.run))
        lines.append("| " + " | ".join(cells) + " |")
    counts: dict[str, int] = {}
    for row in table.rows:
        counts[row.run.status] = counts.get(row.run.status, 0) + 1
    total = sum(r.run.wall_time or 0.0 for r in table.rows)
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    lines += ["", f"{len(table.rows)} jobs: {summary}; total wall time {_fmt_time(total)}."]
    lines.append(
        "Ours: COCO AP in percent on the run's validation set. Paper: Lin et al. 2017, "
        "Table 1, ResNet-50-FPN, 600 px, COCO minival"
        + (" (block d: ResNet-101-FPN)." if table.block == "d" else ".")
    )
    return "\n".join(lines) + "\n"


def write_csv(table: ReportTable, path: Path) -> None:
    """``table.csv``: one line per job; axes, every metric found, the paper's numbers."""
    metric_names: list[str] = list(METRICS)
    for row in table.rows:
        metric_names += [m for m in row.run.metrics if m not in metric_names]
    axis_names = [k for k in AXIS_LABELS if any(k in r.axes for r in table.rows)]
    axis_names += [k for k in table.columns if k not in axis_names]
    fields = ["job", "status", "reason", *axis_names, *metric_names]
    fields += ["paper_AP", "paper_AP50", "paper_AP75", "wall_time_s", "overrides"]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(fields)
    for row in table.rows:
        run, paper = row.run, row.paper
        line: list[Any] = [run.name, run.status, run.reason]
        line += [_fmt_value(row.axes[k]) if k in row.axes else "" for k in axis_names]
        line += [run.metrics.get(m, "") for m in metric_names]
        line += [paper.ap, paper.ap50, paper.ap75] if paper else ["", "", ""]
        line += ["" if run.wall_time is None else f"{run.wall_time:.1f}"]
        line.append(" ".join(run.overrides))
        writer.writerow(line)
    write_text_atomic(path, buffer.getvalue())


def heatmap_axes(table: ReportTable) -> tuple[str | None, str | None]:
    """γ × α when that tells the runs apart, else the first pair of swept columns that does
    (e.g. loss × π for the prior-init sweep), else γ × α or the first two columns anyway."""
    cols = table.columns
    pairs = [("gamma", "alpha")] + [(a, b) for i, a in enumerate(cols) for b in cols[i + 1:]]
    for y_key, x_key in pairs:
        if y_key in cols and x_key in cols:
            cells = [(_cell(r, y_key), _cell(r, x_key)) for r in table.rows]
            if len(set(cells)) == len(cells):
                return y_key, x_key
    if all(any(k in r.axes for r in table.rows) for k in ("gamma", "alpha")):
        return "gamma", "alpha"
    if len(cols) >= 2:
        return cols[0], cols[1]
    return (cols[0], None) if cols else (None, None)


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, float(value)) if isinstance(value, int | float) else (1, _fmt_value(value))


def _cell(row: TableRow, key: str | None) -> str:
    if key is None:
        return ""
    return _fmt_value(row.axes[key]) if key in row.axes else "–"


def plot_heatmap(table: ReportTable, path: Path) -> None:
    """``heatmap.png``: AP of finished runs over γ (rows) × α (columns).

    When γ × α does not tell the runs apart, another pair of swept axes is used (see
    :func:`heatmap_axes`). Cells of failed or
    unfinished runs read as such; cells no run covered stay blank. Where several runs share a
    cell, the best AP is shown.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    y_key, x_key = heatmap_axes(table)
    ys = sorted({_cell(r, y_key) for r in table.rows})
    xs = sorted({_cell(r, x_key) for r in table.rows})
    raw = {_cell(r, k): r.axes.get(k) for r in table.rows for k in (y_key, x_key)}
    ys.sort(key=lambda v: _sort_key(raw.get(v, v)))
    xs.sort(key=lambda v: _sort_key(raw.get(v, v)))
    grid = [[math.nan] * len(xs) for _ in ys]
    notes: dict[tuple[int, int], str] = {}
    for row in table.rows:
        i, j = ys.index(_cell(row, y_key)), xs.index(_cell(row, x_key))
        ap = row.run.metrics.get("AP")
        if row.run.status == "done" and isinstance(ap, int | float):
            grid[i][j] = ap if math.isnan(grid[i][j]) else max(grid[i][j], ap)
        elif (i, j) not in notes:
            notes[(i, j)] = row.run.status
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


def write_report(multirun_dir: Path) -> ReportTable:
    """Collect ``multirun_dir`` and write ``table.md``, ``table.csv`` and ``heatmap.png``."""
    table = build_table(collect_runs(multirun_dir))
    write_text_atomic(multirun_dir / "table.md", format_markdown(table))
    write_csv(table, multirun_dir / "table.csv")
    plot_heatmap(table, multirun_dir / "heatmap.png")
    return table

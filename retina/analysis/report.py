"""A sweep's report (``retina-report DIR``): the paper's Table 1 from a multirun directory.

A multirun directory (``retina-train -m +experiment=NAME``) holds one folder per job,
``DIR/0/``, ``DIR/1/``, ... with ``.hydra/overrides.yaml`` and, once the job finished,
``metrics.json``, plus ``DIR/multirun.yaml``. The report reads every job, including the ones
that failed, are still running or never started (a failed job stops Hydra's basic sweeper, so
the rest of the grid is recovered from ``multirun.yaml``), and writes

- ``DIR/table.md``: one row per setting: the jobs that differ only in ``train.seed`` are one
  row with mean ± standard deviation and ``n`` of AP, AP50, AP75 (best mean in bold); the
  AP difference of each row to a reference row (default: FL γ = 2, α = .25) with a 95 %
  Welch interval; the paper's numbers where the row matches one of its Table 1; the
  measured inference time per image when the jobs recorded it; wall time, status;
- ``DIR/table.csv``: one line per job (its row number in ``row``), all COCO metrics;
- ``DIR/heatmap.png``: mean AP over γ × α (or over the two swept axes when γ and α are fixed);
- ``DIR/curves.png``: AP against iteration per row, when the jobs evaluated periodically.

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

from retina.analysis.curves import plot_curves
from retina.analysis.groups import (
    SEED_AXIS,
    SeedGroup,
    default_reference,
    find_reference,
    group_by_seed,
    set_differences,
)
from retina.analysis.paper import TABLE1, TABLE1_BLOCKS, PaperRow
from retina.analysis.runs import Run, collect_runs, run_axes
from retina.utils.io import save_figure_atomic, write_text_atomic

__all__ = [
    "AXIS_LABELS",
    "SPEED_METRIC",
    "METRICS",
    "ReportTable",
    "TableRow",
    "build_table",
    "format_markdown",
    "group_label",
    "heatmap_axes",
    "infer_block",
    "match_paper_row",
    "plot_heatmap",
    "write_csv",
    "write_report",
]

METRICS: tuple[str, ...] = ("AP", "AP50", "AP75")
"""The metrics shown in ``table.md`` (``table.csv`` adds every metric found)."""

SPEED_METRIC = "inference_ms_per_image"
"""Measured inference time per image at batch 1 (``train.time_inference``), in ``table.md``
as ``ms/img`` when any job recorded it."""

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
    "lr": "base LR",
    "depth": "depth",
    "scale": "scale",
}
"""Column headers for the ablation axes that :func:`retina.analysis.runs.run_axes` extracts."""

_EXPERIMENT_BLOCKS = {
    "table1a_alpha_ce": "a",
    "table1b_gamma_alpha": "b",
    "table1c_anchors": "c",
    "table1d_ohem": "d",
    "table1e_speed": "e",
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
    """The report: its jobs (``rows``), the seed groups shown in ``table.md`` (``groups``),
    the columns that vary, which paper block it mirrors and the reference row."""

    title: str
    block: str | None
    columns: list[str]
    rows: list[TableRow]
    groups: list[SeedGroup] = field(default_factory=list)
    bold: dict[int, set[str]] = field(default_factory=dict)

    @property
    def reference(self) -> SeedGroup | None:
        return next((g for g in self.groups if g.reference), None)

    def paper(self, group: SeedGroup) -> PaperRow | None:
        """The paper's row that the group's jobs reproduce (they share their settings)."""
        return next((r.paper for r in self.rows if r.run is group.runs[0]), None)


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


def build_table(runs: Sequence[Run], title: str = "", reference: str | None = None
                ) -> ReportTable:
    """Turn collected runs into report rows: columns, seed groups, paper matches, bold maxima
    and the differences to the reference row.

    The columns are the ablation axes that vary across jobs (in :data:`AXIS_LABELS` order),
    plus any raw override that varies but no axis explains; ``train.seed`` is never a column
    (its jobs are one row). The best mean AP, AP50 and AP75 among rows with a finished job
    are marked bold (ties included).

    Args:
        reference: the reference row (see :func:`retina.analysis.groups.find_reference`);
            None: the paper's FL γ = 2, α = .25 row when present.

    Raises:
        ValueError: ``reference`` names no row or several.
    """
    block = infer_block(runs)
    all_axes = [run_axes(r) for r in runs]
    varying = [k for k in _varying_axes(all_axes) if k != SEED_AXIS]
    columns = [k for k in AXIS_LABELS if k in varying]
    keys = [tuple(repr(a.get(k)) for k in columns) for a in all_axes]
    seedless = [tuple(repr(a.get(k)) for k in columns) + (repr(a.get(SEED_AXIS)),)
                for a in all_axes]
    if not columns or len(set(seedless)) < len(seedless) or (
            len(set(keys)) < len(keys) and SEED_AXIS not in _varying_axes(all_axes)):
        columns += [k for k in varying if k not in AXIS_LABELS]
    if not columns:
        columns = [k for k in AXIS_LABELS if any(k in a for a in all_axes)][:4]
    rows = [
        TableRow(run=r, axes=a, paper=match_paper_row(a, block))
        for r, a in zip(runs, all_axes, strict=True)
    ]
    groups = group_by_seed(runs, all_axes, [*METRICS, SPEED_METRIC])
    if reference is None:
        ref = default_reference(groups)
    else:
        ref = find_reference(groups, reference, {**AXIS_LABELS, **{c: c for c in columns}})
    set_differences(groups, ref)
    bold: dict[int, set[str]] = {}
    for metric in METRICS:
        means = [g.stats[metric].mean for g in groups if metric in g.stats]
        if not means:
            continue
        for i, group in enumerate(groups):
            if metric in group.stats and _close(group.stats[metric].mean, max(means)):
                bold.setdefault(i, set()).add(metric)
                for row in rows:
                    if row.run in group.runs and row.run.status == "done":
                        row.bold.add(metric)
    if not title:
        experiment = next((r.experiment for r in runs if r.experiment), None)
        title = (f"Table 1 {TABLE1_BLOCKS[block]}" if block
                 else _TITLES.get(experiment or "", f"Ablation {experiment or ''}".strip()))
    return ReportTable(title=title, block=block, columns=columns, rows=rows, groups=groups,
                       bold=bold)


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


def _fmt_stat(group: SeedGroup, metric: str, digits: int = 1) -> str:
    stat = group.stats.get(metric)
    if stat is None:
        return "–"
    if stat.n < 2:
        return f"{stat.mean:.{digits}f}"
    return f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def _fmt_delta(group: SeedGroup) -> str:
    """``+1.2 [-0.8, 3.2]`` (95 % Welch interval); ``n.s.`` when it contains 0."""
    if group.reference:
        return "reference"
    delta = group.delta
    if delta is None:
        return "–"
    if not delta.has_interval:
        return f"{delta.diff:+.1f} (CI n/a)"
    mark = " n.s." if delta.contains_zero else ""
    return f"{delta.diff:+.1f} [{delta.low:+.1f}, {delta.high:+.1f}]{mark}"


def _group_status(group: SeedGroup) -> str:
    if len(group.runs) == 1:
        return _fmt_status(group.runs[0])
    counts: dict[str, int] = {}
    for run in group.runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    text = ", ".join(f"{n} {status}" for status, n in counts.items())
    reasons = [f"{r.name}: {r.reason}" for r in group.runs if r.status != "done" and r.reason]
    text += f" ({'; '.join(reasons)})" if reasons else ""
    return text.replace("|", "\\|").replace("\n", " ")


def group_label(table: ReportTable, group: SeedGroup) -> str:
    """A row's settings as ``γ=2, α=0.25`` (its swept columns), for legends."""
    parts = [f"{AXIS_LABELS.get(c, c)}={_fmt_value(group.axes[c])}"
             for c in table.columns if c in group.axes]
    return ", ".join(parts) or "all jobs"


def format_markdown(table: ReportTable) -> str:
    """``table.md``: one row per seed group in the paper's Table 1 layout, with a summary.

    Columns: the swept settings; AP, AP50, AP75 as ``mean ± std`` over the finished seeds
    (the best mean in bold); ``n`` when any row has several jobs; ``ΔAP`` to the reference
    row with its 95 % Welch interval (``n.s.``: the interval contains 0); ``ms/img`` when the
    jobs timed inference; the paper's numbers; wall time (sum over the row's jobs); status.
    """
    grouped = any(len(g.runs) > 1 for g in table.groups)
    speed = any(SPEED_METRIC in g.stats for g in table.groups)
    reference = table.reference
    header = [AXIS_LABELS.get(c, c) for c in table.columns] + list(METRICS)
    header += ["n"] if grouped else []
    header += ["ΔAP vs reference (95 % CI)"] if reference is not None else []
    header += ["ms/img"] if speed else []
    header += ["paper AP / AP50 / AP75", "time", "status"]
    lines = [f"# {table.title}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for i, group in enumerate(table.groups):
        cells = [_fmt_value(group.axes[c]) if c in group.axes else "–" for c in table.columns]
        for metric in METRICS:
            text = _fmt_stat(group, metric)
            cells.append(f"**{text}**" if metric in table.bold.get(i, ()) else text)
        if grouped:
            cells.append(f"{group.n}/{len(group.runs)}" if group.n != len(group.runs)
                         else str(group.n))
        if reference is not None:
            cells.append(_fmt_delta(group))
        if speed:
            cells.append(_fmt_stat(group, SPEED_METRIC, 0))
        paper = table.paper(group)
        cells.append(f"{paper.ap:.1f} / {paper.ap50:.1f} / {paper.ap75:.1f}" if paper else "")
        times = [r.wall_time for r in group.runs if r.wall_time is not None]
        cells.append(_fmt_time(sum(times)) if times else "–")
        cells.append(_group_status(group))
        lines.append("| " + " | ".join(cells) + " |")
    counts: dict[str, int] = {}
    for row in table.rows:
        counts[row.run.status] = counts.get(row.run.status, 0) + 1
    total = sum(r.run.wall_time or 0.0 for r in table.rows)
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    lines += ["", f"{len(table.rows)} jobs: {summary}; total wall time {_fmt_time(total)}."]
    if grouped:
        lines.append("Jobs that differ only in `train.seed` are one row: mean ± sample standard "
                     "deviation over its n finished seeds.")
    if reference is not None:
        lines.append(
            f"ΔAP: mean AP minus the reference row's ({group_label(table, reference)}), with "
            "a 95 % Welch t interval (unequal variances, Welch–Satterthwaite degrees of "
            "freedom); n.s.: the interval contains 0; CI n/a: a row with fewer than 2 seeds."
        )
    if table.block == "e":
        lines.append("Paper: Lin et al. 2017, Table 1e, COCO test-dev, ms on an Nvidia M40 "
                     "(`retina.analysis.paper.TABLE1E`); ms/img: ours, batch 1, this machine.")
    else:
        lines.append(
            "Ours: COCO AP in percent on the run's validation set. Paper: Lin et al. 2017, "
            "Table 1, ResNet-50-FPN, 600 px, COCO minival"
            + (" (block d: ResNet-101-FPN)." if table.block == "d" else ".")
        )
    return "\n".join(lines) + "\n"


def write_csv(table: ReportTable, path: Path) -> None:
    """``table.csv``: one line per job (``row``: its row in ``table.md``); axes, every metric
    found, the paper's numbers."""
    metric_names: list[str] = list(METRICS)
    for row in table.rows:
        metric_names += [m for m in row.run.metrics if m not in metric_names]
    axis_names = [k for k in AXIS_LABELS if any(k in r.axes for r in table.rows)]
    axis_names += [k for k in table.columns if k not in axis_names]
    if any(SEED_AXIS in r.axes for r in table.rows) and SEED_AXIS not in axis_names:
        axis_names.append(SEED_AXIS)
    fields = ["job", "row", "status", "reason", *axis_names, *metric_names]
    fields += ["paper_AP", "paper_AP50", "paper_AP75", "wall_time_s", "overrides"]
    group_of = {id(run): i + 1 for i, g in enumerate(table.groups) for run in g.runs}
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(fields)
    for row in table.rows:
        run, paper = row.run, row.paper
        line: list[Any] = [run.name, group_of.get(id(run), ""), run.status, run.reason]
        line += [_fmt_value(row.axes[k]) if k in row.axes else "" for k in axis_names]
        line += [run.metrics.get(m, "") for m in metric_names]
        line += [paper.ap, paper.ap50, paper.ap75] if paper else ["", "", ""]
        line += ["" if run.wall_time is None else f"{run.wall_time:.1f}"]
        line.append(" ".join(run.overrides))
        writer.writerow(line)
    write_text_atomic(path, buffer.getvalue())


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
    return (0, float(value)) if isinstance(value, int | float) else (1, _fmt_value(value))


def _cell(row: TableRow | SeedGroup, key: str | None) -> str:
    if key is None:
        return ""
    return _fmt_value(row.axes[key]) if key in row.axes else "–"


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


def write_report(multirun_dir: Path, reference: str | None = None) -> ReportTable:
    """Collect ``multirun_dir`` and write ``table.md``, ``table.csv``, ``heatmap.png`` and,
    when its jobs evaluated periodically, ``curves.png``.

    Args:
        reference: the reference row of the ΔAP column (see :func:`build_table`).
    """
    table = build_table(collect_runs(multirun_dir), reference=reference)
    write_text_atomic(multirun_dir / "table.md", format_markdown(table))
    write_csv(table, multirun_dir / "table.csv")
    plot_heatmap(table, multirun_dir / "heatmap.png")
    plot_curves(table.groups, lambda g: group_label(table, g), multirun_dir / "curves.png",
                table.title)
    return table

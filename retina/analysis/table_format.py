"""``table.md`` and ``table.csv`` of a sweep's report, from a
:class:`retina.analysis.table.ReportTable`."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from retina.analysis.groups import SEED_AXIS, SeedGroup
from retina.analysis.runs import Run
from retina.analysis.table import AXIS_LABELS, METRICS, SPEED_METRIC, ReportTable
from retina.utils.io import write_text_atomic

__all__ = ["format_markdown", "format_value", "group_label", "write_csv"]


def format_value(value: Any) -> str:
    """A setting as ``table.md`` shows it: ``null``, ``true``, ``0.25``, ``[1, 2]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
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
    parts = [f"{AXIS_LABELS.get(c, c)}={format_value(group.axes[c])}"
             for c in table.columns if c in group.axes]
    return ", ".join(parts) or "all jobs"


def format_markdown(table: ReportTable) -> str:
    """``table.md``: one row per seed group in the paper's Table 1 layout, with a summary.

    Columns: the swept settings; AP, AP50, AP75 as ``mean ± std`` over the finished seeds
    (the best mean in bold); ``n`` when any row has several jobs; ``ΔAP`` to the reference
    row with its 95 % Welch interval (``n.s.``: the interval contains 0); ``ms/img`` when the
    jobs timed inference; the paper's numbers; training time (``train_seconds`` of the
    jobs' ``metrics.json``, summed over the row's jobs); status.
    """
    grouped = any(len(g.runs) > 1 for g in table.groups)
    speed = any(SPEED_METRIC in g.stats for g in table.groups)
    reference = table.reference
    header = [AXIS_LABELS.get(c, c) for c in table.columns] + list(METRICS)
    header += ["n"] if grouped else []
    header += ["ΔAP vs reference (95 % CI)"] if reference is not None else []
    header += ["ms/img"] if speed else []
    header += ["paper AP / AP50 / AP75", "train time", "status"]
    lines = [f"# {table.title}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for i, group in enumerate(table.groups):
        cells = [format_value(group.axes[c]) if c in group.axes else "–" for c in table.columns]
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
        times = [r.train_seconds for r in group.runs if r.train_seconds is not None]
        cells.append(_fmt_time(sum(times)) if times else "–")
        cells.append(_group_status(group))
        lines.append("| " + " | ".join(cells) + " |")
    counts: dict[str, int] = {}
    for row in table.rows:
        counts[row.run.status] = counts.get(row.run.status, 0) + 1
    times = [r.run.train_seconds for r in table.rows if r.run.train_seconds is not None]
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    total = _fmt_time(sum(times)) if times else "–"
    lines += ["", f"{len(table.rows)} jobs: {summary}; total training time {total}."]
    lines.append("train time: `train_seconds` of each job's metrics.json (the training loop, "
                 "not the final evaluation; a resumed job counts its last part).")
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
    fields += ["paper_AP", "paper_AP50", "paper_AP75", "train_seconds", "overrides"]
    group_of = {id(run): i + 1 for i, g in enumerate(table.groups) for run in g.runs}
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(fields)
    for row in table.rows:
        run, paper = row.run, row.paper
        line: list[Any] = [run.name, group_of.get(id(run), ""), run.status, run.reason]
        line += [format_value(row.axes[k]) if k in row.axes else "" for k in axis_names]
        line += [run.metrics.get(m, "") for m in metric_names]
        line += [paper.ap, paper.ap50, paper.ap75] if paper else ["", "", ""]
        line += ["" if run.train_seconds is None else f"{run.train_seconds:.1f}"]
        line.append(" ".join(run.overrides))
        writer.writerow(line)
    write_text_atomic(path, buffer.getvalue())

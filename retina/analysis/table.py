"""The rows of a sweep's report: which settings are columns, the seed groups, the paper's
matching rows, the best means (bold) and each row's AP difference to the reference row.

:func:`build_table` turns :func:`retina.analysis.multirun.collect_runs`'s jobs into a
:class:`ReportTable`; :mod:`retina.analysis.table_format` writes it as ``table.md`` and
``table.csv``, :mod:`retina.analysis.heatmap` draws it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from retina.analysis.axes import AXIS_KEYS, config_axes, run_axes, varying_axes
from retina.analysis.groups import (
    SEED_AXIS,
    SeedGroup,
    default_reference,
    find_reference,
    group_by_seed,
    set_differences,
)
from retina.analysis.paper import TABLE1_BLOCKS, PaperRow
from retina.analysis.paper_match import close, infer_block, match_paper_row
from retina.analysis.runs import Run

__all__ = [
    "AXIS_LABELS",
    "METRICS",
    "SPEED_METRIC",
    "ReportTable",
    "TableRow",
    "build_table",
]

METRICS: tuple[str, ...] = ("AP", "AP50", "AP75")
"""The metrics shown in ``table.md`` (``table.csv`` adds every metric found)."""

SPEED_METRIC = "inference_ms_per_image"
"""Measured inference time per image at batch 1 (``train.time_inference``), in ``table.md``
as ``ms/img`` when any job recorded it."""

AXIS_LABELS: dict[str, str] = {
    "implementation": "implementation",
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
"""Column headers for the ablation axes that :func:`retina.analysis.axes.run_axes` extracts."""

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


def _same_values(key: str, other: str, all_axes: Sequence[dict[str, Any]]) -> bool:
    """``key`` repeats ``other`` in every run that has it (an interpolation of a column)."""
    return all(other in a and repr(a[other]) == repr(a[key]) for a in all_axes if key in a)


def _columns(all_axes: Sequence[dict[str, Any]], config_keys: set[str]) -> list[str]:
    """What tells the rows apart, never the seed: the ablation axes that vary (in
    :data:`AXIS_LABELS` order), then every other config key that varies, unless it belongs to
    a swept config group (``model.width`` under ``model=a,b``: the choice is the column) or
    repeats a column's values; then, if rows still share a label, the overrides that vary."""
    varying = [k for k in varying_axes(all_axes) if k != SEED_AXIS]
    columns = [k for k in AXIS_LABELS if k in varying]
    for key in varying:
        if key not in config_keys or key in columns:
            continue
        group = next((g for g in varying if key.startswith(g + ".")), None)
        if group is not None:
            columns += [] if group in columns else [group]
        elif not any(_same_values(key, c, all_axes) for c in columns):
            columns.append(key)
    labels = [tuple(repr(a.get(k)) for k in columns) for a in all_axes]
    groups = [tuple(repr(a.get(k)) for k in varying) for a in all_axes]
    if not columns or len(set(labels)) < len(set(groups)):
        columns += [k for k in varying if k not in columns]
    if not columns:
        columns = [k for k in AXIS_LABELS if any(k in a for a in all_axes)][:4]
    return columns


def _mark_bold(rows: Sequence[TableRow], groups: Sequence[SeedGroup]) -> dict[int, set[str]]:
    """The best mean of each metric (ties included), by group index; finished rows too."""
    bold: dict[int, set[str]] = {}
    for metric in METRICS:
        means = [g.stats[metric].mean for g in groups if metric in g.stats]
        if not means:
            continue
        for i, group in enumerate(groups):
            if metric in group.stats and close(group.stats[metric].mean, max(means)):
                bold.setdefault(i, set()).add(metric)
                for row in rows:
                    if row.run in group.runs and row.run.status == "done":
                        row.bold.add(metric)
    return bold


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
    extra = config_axes(runs)
    for axes, more in zip(all_axes, extra, strict=True):
        axes.update(more)
    columns = _columns(all_axes, {k for more in extra for k in more})
    rows = [
        TableRow(run=r, axes=a, paper=match_paper_row(a, block))
        for r, a in zip(runs, all_axes, strict=True)
    ]
    groups = group_by_seed(runs, all_axes, [*METRICS, SPEED_METRIC])
    if reference is None:
        ref = default_reference(groups)
    else:
        aliases = {**AXIS_KEYS, **{label: key for key, label in AXIS_LABELS.items()}}
        ref = find_reference(groups, reference, aliases)
    set_differences(groups, ref)
    bold = _mark_bold(rows, groups)
    if not title:
        experiment = next((r.experiment for r in runs if r.experiment), None)
        title = (f"Table 1 {TABLE1_BLOCKS[block]}" if block
                 else _TITLES.get(experiment or "", f"Ablation {experiment or ''}".strip()))
    return ReportTable(title=title, block=block, columns=columns, rows=rows, groups=groups,
                       bold=bold)

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
  measured inference time per image when the jobs recorded it; training time, status;
- ``DIR/table.csv``: one line per job (its row number in ``row``), all COCO metrics;
- ``DIR/heatmap.png``: mean AP over γ × α (or over the two swept axes when γ and α are fixed);
- ``DIR/curves.png``: AP against iteration per row, when the jobs evaluated periodically.

Each job has its own module: reading the sweep (:mod:`retina.analysis.multirun`; one job
folder: :mod:`retina.analysis.runs`), matching runs to the paper's rows
(:mod:`retina.analysis.paper_match`), building the table
(:mod:`retina.analysis.table`, seed groups in :mod:`retina.analysis.groups`), markdown and CSV
(:mod:`retina.analysis.table_format`), the heatmap (:mod:`retina.analysis.heatmap`) and the
curves (:mod:`retina.analysis.curves`); this module only wires them for
:mod:`retina.cli.report`.
"""

from __future__ import annotations

from pathlib import Path

from retina.analysis.curves import plot_curves
from retina.analysis.heatmap import plot_heatmap
from retina.analysis.multirun import collect_runs
from retina.analysis.table import ReportTable, build_table
from retina.analysis.table_format import format_markdown, group_label, write_csv
from retina.utils.io import write_text_atomic

__all__ = ["write_report"]


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

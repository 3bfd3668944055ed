"""Learning curves of a sweep (``DIR/curves.png``): AP against iteration, one line per seed
group (the mean over its seeds), with the seeds' range (min..max) as a band.

Each run's periodic evaluations come from its ``metrics_history.json`` (written by
:class:`retina.engine.hooks.EvalHook`): a list of ``{"iteration", "AP", "AP50", "AP75"}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from retina.analysis.groups import REPEATED, SeedGroup
from retina.analysis.runs import Run
from retina.utils.io import save_figure_atomic

__all__ = ["HISTORY_FILE", "group_curve", "plot_curves", "read_history"]

HISTORY_FILE = "metrics_history.json"


def read_history(run: Run) -> dict[int, dict[str, float]]:
    """``{iteration: {metric: value}}`` from the run's history; ``{}`` when it has none or it
    cannot be read (a curve is a nicety: a broken file never stops the report)."""
    if run.path is None:
        return {}
    try:
        data = json.loads((run.path / HISTORY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = data.get("history") if isinstance(data, dict) else data
    out: dict[int, dict[str, float]] = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("iteration"), int):
            continue
        out[entry["iteration"]] = {
            k: float(v) for k, v in entry.items()
            if k != "iteration" and isinstance(v, int | float) and math.isfinite(v)
        }
    return out


def group_curve(group: SeedGroup, metric: str = "AP"
                ) -> list[tuple[int, float, float, float]]:
    """``(iteration, mean, min, max)`` of ``metric`` over the group's finished runs (the
    table's ``n``; a row none of whose runs finished: its runs so far), at every iteration
    that all of them with a history evaluated. A repeated seed is not a run of its own."""
    finished = [r for r in group.runs if r.status == "done"]
    runs = finished or [r for r in group.runs if r.status != REPEATED]
    histories = [h for h in (read_history(r) for r in runs) if h]
    if not histories:
        return []
    iterations = set.intersection(*(set(h) for h in histories))
    curve = []
    for it in sorted(iterations):
        values = [h[it][metric] for h in histories if metric in h[it]]
        if len(values) == len(histories):
            curve.append((it, sum(values) / len(values), min(values), max(values)))
    return curve


def plot_curves(groups: Sequence[SeedGroup], label: Callable[[SeedGroup], str], path: Path,
                title: str = "") -> bool:
    """Draw ``curves.png``; returns False (and writes nothing) when no run has a history."""
    curves: list[tuple[str, list[Any]]] = [(label(g), group_curve(g)) for g in groups]
    curves = [(name, c) for name, c in curves if c]
    if not curves:
        return False
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # the legend goes under the axes (labels of many swept keys are long): room for its lines
    fig = Figure(figsize=(7.0, 4.5 + 0.2 * len(curves)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, curve in curves:
        its = [c[0] for c in curve]
        (line,) = ax.plot(its, [c[1] for c in curve], marker="o", markersize=3, label=name)
        if any(c[3] > c[2] for c in curve):
            ax.fill_between(its, [c[2] for c in curve], [c[3] for c in curve],
                            color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("iteration")
    ax.set_ylabel("AP (%)")
    ax.set_title((title + "\n" if title else "") + "mean over seeds; band: min..max", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    fig.tight_layout()
    save_figure_atomic(fig, path)
    return True

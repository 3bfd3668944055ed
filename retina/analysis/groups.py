"""Seed groups of a sweep: the jobs that differ only in ``train.seed`` become one row, with
mean ± standard deviation and ``n`` per metric, and each row's AP difference to a reference
row with a 95 % Welch confidence interval (:mod:`retina.analysis.intervals`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from retina.analysis.intervals import Difference, Summary, summarize, welch_difference
from retina.analysis.runs import Run

__all__ = [
    "SEED_AXIS",
    "SeedGroup",
    "default_reference",
    "find_reference",
    "group_by_seed",
    "set_differences",
]

SEED_AXIS = "seed"
"""The axis (``train.seed``) that a group's jobs may differ in."""


@dataclass
class SeedGroup:
    """The jobs of a sweep with the same settings but for ``train.seed``.

    Attributes:
        axes: the shared ablation values (without the seed).
        runs: the jobs, in sweep order.
        stats: per metric, the :class:`Summary` over the finished jobs.
        delta: AP difference to the reference row with its interval (None for the reference
            itself and when the report has no reference).
        reference: this is the reference row.
    """

    axes: dict[str, Any]
    runs: list[Run]
    stats: dict[str, Summary] = field(default_factory=dict)
    delta: Difference | None = None
    reference: bool = False

    @property
    def n(self) -> int:
        """Finished jobs (the ``n`` of the means)."""
        return sum(1 for r in self.runs if r.status == "done")

    def values(self, metric: str) -> list[float]:
        """``metric`` of the finished jobs (finite values only)."""
        out = []
        for run in self.runs:
            value = run.metrics.get(metric)
            if run.status == "done" and isinstance(value, int | float) and math.isfinite(value):
                out.append(float(value))
        return out


def _key(axes: dict[str, Any]) -> str:
    return repr(sorted((k, repr(v)) for k, v in axes.items() if k != SEED_AXIS))


REPEATED = "repeated seed"
"""The status of a finished job whose seed an earlier finished job of its row already has (a
copied folder, a run repeated under another name): counted once, not as a new sample."""


def _count_each_seed_once(group: SeedGroup, seeds: dict[int, Any]) -> None:
    """Mark each finished job whose known seed an earlier finished job of ``group`` has as
    :data:`REPEATED`: two runs of one seed are not two samples (n and the interval would
    shrink)."""
    counted: dict[str, Run] = {}
    for run in group.runs:
        seed = seeds.get(id(run))
        if run.status != "done" or seed is None:
            continue
        first = counted.setdefault(repr(seed), run)
        if first is not run:
            run.status, run.reason = REPEATED, f"seed {seed} counted once, from {first.name}"


def group_by_seed(runs: Sequence[Run], all_axes: Sequence[dict[str, Any]],
                  metrics: Sequence[str]) -> list[SeedGroup]:
    """Group jobs whose axes agree except for :data:`SEED_AXIS`, in order of first job; a
    seed finished twice in one group counts once (the later job becomes :data:`REPEATED`)."""
    groups: dict[str, SeedGroup] = {}
    seeds: dict[int, Any] = {}
    for run, axes in zip(runs, all_axes, strict=True):
        key = _key(axes)
        if key not in groups:
            groups[key] = SeedGroup({k: v for k, v in axes.items() if k != SEED_AXIS}, [])
        groups[key].runs.append(run)
        seeds[id(run)] = axes.get(SEED_AXIS)
    for group in groups.values():
        _count_each_seed_once(group, seeds)
        for metric in metrics:
            values = group.values(metric)
            if values:
                group.stats[metric] = summarize(values)
    return list(groups.values())


def _is_paper_focal(axes: dict[str, Any]) -> bool:
    loss = str(axes.get("loss", "focal")).lower()
    if "ohem" in loss or "star" in loss:
        return False
    gamma, alpha = axes.get("gamma"), axes.get("alpha")
    try:
        return math.isclose(float(gamma), 2.0) and math.isclose(float(alpha), 0.25)
    except (TypeError, ValueError):
        return False


def default_reference(groups: Sequence[SeedGroup]) -> SeedGroup | None:
    """The paper's focal loss row (γ = 2, α = .25); the best by mean AP when several (an LR
    sweep); None when the sweep has no such row. Rows of a reference implementation
    (``implementation`` other than ``retina``) are chosen only when no other row fits."""
    focal = [g for g in groups if _is_paper_focal(g.axes)]
    candidates = [g for g in focal if g.axes.get("implementation", "retina") == "retina"] or focal
    if not candidates:
        return None
    return max(candidates, key=lambda g: g.stats["AP"].mean if "AP" in g.stats else -math.inf)


def _same(value: Any, text: str) -> bool:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return math.isclose(float(value), float(text), rel_tol=1e-6, abs_tol=1e-12)
        except ValueError:
            return False
    if value is None:
        return text.lower() in ("null", "none")
    return str(value).lower() == text.lower()


def find_reference(groups: Sequence[SeedGroup], spec: str,
                   aliases: dict[str, str]) -> SeedGroup:
    """The row that ``spec`` names: its 1-based row number in ``table.md``, or
    ``key=value[,key=value...]`` over the row's axes, where a key is an axis (``gamma``), any
    name ``aliases`` maps to one (the column label ``γ``, the config key ``loss.gamma``) or a
    column's dotted config key (``train.max_iter``).

    Raises:
        ValueError: no row, or more than one, matches ``spec``.
    """
    spec = spec.strip()
    if spec.isdigit():
        index = int(spec)
        if not 1 <= index <= len(groups):
            raise ValueError(f"--reference {spec}: the table has rows 1..{len(groups)}")
        return groups[index - 1]
    wanted: list[tuple[str, str]] = []
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--reference {spec!r}: expected a row number or key=value,...")
        key = key.strip()
        wanted.append((aliases.get(key, key), value.strip()))
    found = [g for g in groups if all(k in g.axes and _same(g.axes[k], v) for k, v in wanted)]
    if len(found) != 1:
        what = "no row of the table matches" if not found else (
            f"{len(found)} rows of the table match")
        raise ValueError(f"--reference {spec!r}: {what} (need exactly one)")
    return found[0]


def set_differences(groups: Sequence[SeedGroup], reference: SeedGroup | None,
                    level: float = 0.95) -> None:
    """Mark ``reference`` and give every other group with a finished job its AP difference to
    it, with a Welch interval at ``level`` (none when either side has fewer than 2 seeds)."""
    for group in groups:
        group.reference = group is reference
        group.delta = None
        if reference is None or group is reference:
            continue
        ours, ref = group.values("AP"), reference.values("AP")
        if ours and ref:
            group.delta = welch_difference(ours, ref, level)

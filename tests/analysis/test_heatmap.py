"""Which two settings heatmap.png plots."""

from __future__ import annotations

from retina.analysis.heatmap import heatmap_axes
from retina.analysis.runs import Run
from retina.analysis.table import build_table


def test_heatmap_axes_fall_back_to_a_pair_that_tells_runs_apart():
    runs = [Run(name=str(i), status="done", metrics={"AP": float(i)}, choices={"loss": loss},
                config={"loss": {"gamma": g, "alpha": a}, "model": {"prior_prob": p}})
            for i, (loss, g, a, p) in enumerate([("alpha_ce", 0.0, 0.75, 0.01),
                                                  ("alpha_ce", 0.0, 0.75, None),
                                                  ("focal", 2.0, 0.25, 0.01),
                                                  ("focal", 2.0, 0.25, None)])]
    table = build_table(runs)
    assert table.columns == ["loss", "gamma", "alpha", "prior_prob"]
    assert heatmap_axes(table) == ("loss", "prior_prob")


def test_heatmap_axes_tell_rows_apart_not_seeds():
    """An LR sweep with two seeds: α × LR tells the rows apart (the seeds share a cell)."""
    runs = [Run(name=str(i), status="done", metrics={"AP": 50.0 + i},
                config={"loss": {"gamma": g, "alpha": a}, "optim": {"base_lr": lr},
                        "train": {"seed": seed}})
            for i, (g, a, lr, seed) in enumerate(
                (g, a, lr, seed) for g, a in ((2.0, 0.25), (0.0, 0.75), (0.0, 0.5))
                for lr in (0.01, 0.02) for seed in (0, 1))]
    table = build_table(runs)
    assert table.columns == ["gamma", "alpha", "lr"] and len(table.groups) == 6
    assert heatmap_axes(table) == ("alpha", "lr")

"""A run's ablation axes from its overrides, group choices and resolved config."""

from __future__ import annotations

from retina.analysis.axes import run_axes
from retina.analysis.runs import Run


def test_run_axes_keep_null_and_group_choices():
    run = Run(name="3", status="not started",
              overrides=["loss=ce", "model.prior_prob=null", "experiment=prior_init", "seed=2"])
    assert run_axes(run) == {"loss": "ce", "prior_prob": None, "seed": 2}
    run.config = {"model": {"aspect_ratios": [1.0], "prior_prob": 0.01}}
    assert run_axes(run)["num_ratios"] == 1 and run_axes(run)["prior_prob"] == 0.01

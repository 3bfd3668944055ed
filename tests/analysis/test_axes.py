"""A run's ablation axes from its overrides, group choices and resolved config."""

from __future__ import annotations

from retina.analysis.axes import config_axes, run_axes, varying_axes
from retina.analysis.runs import Run


def test_run_axes_keep_null_and_group_choices():
    run = Run(name="3", status="not started",
              overrides=["loss=ce", "model.prior_prob=null", "experiment=prior_init", "seed=2"])
    assert run_axes(run) == {"loss": "ce", "prior_prob": None, "seed": 2}
    run.config = {"model": {"aspect_ratios": [1.0], "prior_prob": 0.01}}
    assert run_axes(run)["num_ratios"] == 1 and run_axes(run)["prior_prob"] == 0.01


def test_an_unfinished_jobs_references_are_followed():
    """An unfinished job has only Hydra's unresolved config: ``base_lr: ${study.lr.fl}`` must
    give the same lr axis as the finished jobs' resolved config, or its seed row splits."""
    run = Run(name="2", status="running", overrides=["train.seed=2"])
    run.config = {"optim": {"base_lr": "${study.lr.fl}"}, "study": {"lr": {"fl": 0.04}},
                  "model": {"prior_prob": "${a}", "depth": "${hydra:runtime.x}"},
                  "a": "${b}", "b": "${a}", "data": {"root": "${paths.x}/y"},
                  "paths": {"x": "."}, "train": {"max_iter": 100}}
    axes = run_axes(run)
    assert axes["lr"] == 0.04
    assert "prior_prob" not in axes and "depth" not in axes  # a cycle; Hydra's runtime
    done = Run(name="0", status="done", overrides=["train.seed=0"])
    done.config = {**run.config, "optim": {"base_lr": 0.04}, "data": {"root": "./y"},
                   "model": {"prior_prob": 0.01, "depth": 10}, "a": 1, "b": 1,
                   "train": {"max_iter": 400}}
    # data.root's template resolves to the finished job's value; a value that cannot be
    # resolved ("a", "b": a cycle) is unknown, not a difference; a real difference stays
    assert config_axes([done, run]) == [{"train.max_iter": 400}, {"train.max_iter": 100}]


def test_a_resumed_job_is_not_another_setting():
    """One seed rerun alone with ``train.resume=true`` (or a changed checkpoint period) must
    stay in its seed row: those keys tell how the job ran, not what it trained."""
    plain = Run(name="1", status="done", overrides=["ablation/fl_vs_ce=fl", "train.seed=1"])
    resumed = Run(name="0", status="done",
                  overrides=["ablation/fl_vs_ce=fl", "train.seed=0", "train.resume=true",
                             "+train.checkpoint_period=50", "hydra.run.dir=x/0"])
    axes = [run_axes(plain), run_axes(resumed)]
    assert axes == [{"ablation/fl_vs_ce": "fl", "seed": 1}, {"ablation/fl_vs_ce": "fl", "seed": 0}]
    assert varying_axes(axes) == ["seed"]

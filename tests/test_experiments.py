"""Every experiment config composes, its declared sweep expands to the paper's rows, every
job of every sweep composes and builds, and a 2 x 2 sweep runs through retina-train."""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from retina.analysis.paper import paper_rows
from retina.config import validate_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
EXPERIMENTS = ["table1a_alpha_ce", "table1b_gamma_alpha", "table1c_anchors", "table1d_ohem",
               "prior_init", "fl_vs_ce", "fl_vs_ce_lr", "table1e_speed"]
# these sweep their own axes; the paper-scale recipe check covers them with a fixed first job
_OWN_SCALE = {"table1e_speed"}


@functools.cache
def _compose_cached(overrides: tuple[str, ...], hydra: bool) -> DictConfig:
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


def _compose(overrides: list[str], hydra: bool = False) -> DictConfig:
    return _compose_cached(tuple(overrides), hydra).copy()


@functools.cache
def _jobs(name: str, scale: str) -> list[list[str]]:
    """The jobs `retina-train -m +experiment=NAME scale=SCALE` launches (basic sweeper)."""
    cfg = _compose([f"+experiment={name}", f"scale={scale}"], hydra=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert params, f"{name} declares no hydra.sweeper.params"
    lines = [f"{k}={v}" for k, v in params.items()] + [f"+experiment={name}", f"scale={scale}"]
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(lines), None)
    return [job for batch in batches for job in batch]


def _job_configs(name: str, scale: str = "cpu") -> list:
    return [_compose(job) for job in _jobs(name, scale)]


def test_every_experiment_config_is_tested():
    assert sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml")) == sorted(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_jobs_compose_validate_and_build(name: str):
    built = set()
    for cfg in _job_configs(name):
        validate_config(cfg)
        assert cfg.task_name == name and cfg.data.name == "shapes" and cfg.model.depth == 10
        loss = instantiate(cfg.loss)
        key = str(OmegaConf.to_container(cfg.model))  # jobs that differ only in the loss
        if key not in built:  # share one model build
            built.add(key)
            instantiate(cfg.model, num_classes=3, cls_loss=loss)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_paper_scale_carries_the_paper_recipe(name: str):
    """Composes only: the paper's data (COCO) and ImageNet weights are not on a test machine."""
    jobs = _jobs(name, "paper")
    cfg = _compose(jobs[0])
    assert (cfg.model.depth, cfg.data.name, cfg.train.batch_size, cfg.train.max_iter) == (
        50, "coco", 16, 90000)
    if name not in _OWN_SCALE:
        assert cfg.data.train_transforms.min_size == 600
    if not name.startswith("fl_vs_ce"):
        assert cfg.optim.base_lr == 0.01
    assert list(cfg.schedule.steps) == [60000, 80000]
    assert len(jobs) == len(_jobs(name, "cpu"))


def test_table1a_sweeps_the_papers_alphas():
    cfgs = _job_configs("table1a_alpha_ce")
    assert [(c.loss.gamma, c.loss.alpha) for c in cfgs] == [
        (0.0, r.setting["alpha"]) for r in paper_rows("a")]


def test_table1b_runs_the_papers_gamma_alpha_pairs():
    cfgs = _job_configs("table1b_gamma_alpha")
    assert [(c.loss.gamma, c.loss.alpha) for c in cfgs] == [
        (r.setting["gamma"], r.setting["alpha"]) for r in paper_rows("b")]
    assert {c.loss._target_ for c in cfgs} == {"retina.modeling.losses.FocalLoss"}


def test_table1c_covers_the_papers_anchor_rows():
    cfgs = _job_configs("table1c_anchors")
    got = {(c.model.num_scales, len(c.model.aspect_ratios)) for c in cfgs}
    assert {(r.setting["num_scales"], r.setting["num_ratios"]) for r in paper_rows("c")} <= got
    assert len(got) == 8


def test_table1d_covers_ohem_rows_and_fl():
    settings = []
    for c in _job_configs("table1d_ohem"):
        if c.loss._target_.endswith("OHEMLoss"):
            method = "OHEM" if c.loss.positive_fraction is None else "OHEM 1:3"
            assert c.loss.positive_fraction in (None, 0.25) and c.loss.nms_thresh == 0.5
            settings.append((method, c.loss.batch_size_per_image))
        else:
            assert (c.loss.gamma, c.loss.alpha) == (2.0, 0.25)
            settings.append(("FL", None))
    paper = [(r.setting["method"], r.setting.get("batch_size")) for r in paper_rows("d")
             if r.setting.get("nms_thresh", 0.5) == 0.5]
    assert sorted(settings, key=str) == sorted(paper, key=str)


def test_prior_init_is_ce_and_fl_with_and_without_prior():
    got = [(c.loss.alpha, c.loss.gamma, c.model.prior_prob) for c in _job_configs("prior_init")]
    assert got == [(None, 0.0, 0.01), (None, 0.0, None), (0.25, 2.0, 0.01), (0.25, 2.0, None)]


def test_fl_vs_ce_rows_seeds_and_own_learning_rates():
    jobs = _job_configs("fl_vs_ce")
    got = [(c.loss.gamma, c.loss.alpha, c.train.seed) for c in jobs]
    assert got == [(g, a, s) for g, a in ((2.0, 0.25), (0.0, 0.75), (0.0, 0.5)) for s in (0, 1, 2)]
    lrs = {"fl": 0.04, "ce_a75": 0.01, "ce_a50": 0.02}
    for option, lr in lrs.items():
        cfg = _compose(["+experiment=fl_vs_ce", f"ablation/fl_vs_ce={option}",
                        *[f"study.lr.{k}={v}" for k, v in lrs.items()], "schedule=long"])
        assert cfg.optim.base_lr == lr and cfg.train.max_iter == 1600 >= 4 * 400
    grid = [(c.loss.alpha, c.optim.base_lr) for c in _job_configs("fl_vs_ce_lr")]
    assert grid == [(a, lr) for a in (0.25, 0.75, 0.5) for lr in (0.01, 0.02, 0.04)]
    for data in ("bccd", "shapes_coco_like"):
        assert _compose(["+experiment=fl_vs_ce", f"data={data}"]).data.name == data


def test_table1e_speed_sweeps_the_scale_and_times_inference():
    jobs = _job_configs("table1e_speed")
    assert [c.data.train_transforms.min_size for c in jobs] == [128, 192, 256, 320, 384]
    assert all(c.data.val_transforms.min_size == c.data.train_transforms.min_size and
               c.train.time_inference > 0 for c in jobs)
    paper = [_compose(["+experiment=table1e_speed", "scale=paper", f"model={m}",
                       f"data.val_transforms.min_size={s}"])
             for m in ("retinanet_r50_fpn", "retinanet_r101_fpn") for s in (400, 800)]
    assert [(c.model.depth, c.data.train_transforms.min_size) for c in paper] == [
        (50, 400), (50, 800), (101, 400), (101, 800)]


@pytest.mark.slow
def test_two_by_two_sweep_through_the_cli_and_report(tmp_path: Path):
    """`retina-train -m +experiment=prior_init` (2 losses x 2 inits), 2 iterations each."""
    from retina.data import make_shapes_dataset

    root = make_shapes_dataset(tmp_path / "shapes", train=4, val=2, size=128, workers=1)
    sweep_dir = tmp_path / "sweep"
    overrides = [
        "+experiment=prior_init", f"hydra.sweep.dir={sweep_dir}", f"data.root={root}",
        "data.train_transforms.min_size=128", "data.train_transforms.max_size=128",
        "data.val_transforms.min_size=128", "data.val_transforms.max_size=128",
        "train.max_iter=2", "train.batch_size=2", "train.num_workers=0", "train.vis_images=0",
        "train.checkpoint_period=2", "train.device=cpu", "schedule.steps=[1]",
        "schedule.warmup_iters=1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-m", "retina.cli.train", "-m", *overrides],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for job in range(4):
        metrics = json.loads((sweep_dir / str(job) / "metrics.json").read_text())
        assert math.isfinite(metrics["AP"]) and metrics["config"]["task_name"] == "prior_init"
    from retina.cli.report import main as report_main

    assert report_main([str(sweep_dir)]) == 0
    table = (sweep_dir / "table.md").read_text()
    assert table.startswith("# Prior initialisation") and table.count("| done |") == 4
    assert "| ce | 0 | null | null |" in table  # loss, γ, α, π
    assert (sweep_dir / "heatmap.png").is_file() and (sweep_dir / "table.csv").is_file()


def test_a_failing_job_does_not_stop_the_sweep(tmp_path: Path, run_main, monkeypatch):
    """Two jobs that fail validation: both run, both are recorded, the exit status is 1."""
    from retina.cli import train as train_module

    monkeypatch.setattr(train_module, "_failed_jobs", [])
    monkeypatch.chdir(tmp_path)
    sweep_dir = tmp_path / "sweep"
    overrides = ["+experiment=prior_init", "loss=ce", "model.prior_prob=0.01",
                 f"hydra.sweep.dir={sweep_dir}", "optim.base_lr=-1,-2", "train.device=cpu"]
    proc = run_main(train_module.main, "retina-train", "-m", *overrides)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "job 0 failed: " in proc.stderr and "job 1 failed: " in proc.stderr
    assert "2 job(s) of the sweep failed: 0, 1" in proc.stderr
    for job, lr in ((0, -1), (1, -2)):
        data = json.loads((sweep_dir / str(job) / "metrics.json").read_text())
        assert data["status"] == "failed" and "base_lr" in data["error"]
        assert data["config"]["optim"]["base_lr"] == lr
    from retina.analysis.multirun import collect_runs

    runs = collect_runs(sweep_dir)
    assert [r.status for r in runs] == ["failed", "failed"]
    assert "base_lr" in runs[0].reason


def test_a_diverged_job_is_recorded_as_diverged(tmp_path: Path, monkeypatch, capsys):
    from retina.analysis.runs import read_run
    from retina.cli import train as train_module
    from retina.engine.trainer import NonFiniteLossError

    monkeypatch.setattr(train_module, "_failed_jobs", [])
    cfg = OmegaConf.create({"optim": {"base_lr": 10.0}, "lr": "${optim.base_lr}"})
    err = NonFiniteLossError("stopping at iteration 19: 5 non-finite losses in a row")
    train_module._record_failed_job(cfg, tmp_path, "1", err)
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["status"] == "diverged" and data["config"]["lr"] == 10.0
    assert "iteration 19" in data["error"]
    assert "job 1 diverged: stopping at iteration 19" in capsys.readouterr().err
    assert train_module._failed_jobs == ["1"]
    run = read_run(tmp_path)
    assert run.status == "failed" and "iteration 19" in run.reason


def test_slurm_preset_composes_when_the_cluster_extra_is_installed():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs '.[cluster]'")
    cfg = _compose(["+experiment=table1b_gamma_alpha", "scale=paper", "hydra/launcher=slurm_paper",
                    "hydra.launcher.partition=gpu"], hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.gpus_per_node == 1
    assert launcher.partition == "gpu" and launcher.timeout_min == 1440

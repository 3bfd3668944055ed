"""retina.analysis.multirun: reference runs of another implementation under SWEEP/torchvision/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from retina.analysis.axes import run_axes
from retina.analysis.multirun import collect_runs
from retina.analysis.table import build_table
from retina.analysis.table_format import format_markdown


def _job(folder: Path, loss: str, seed: int, ap: float, implementation: str | None) -> None:
    (folder / ".hydra").mkdir(parents=True)
    overrides = [f"ablation/fl_vs_ce={loss}", f"train.seed={seed}", "+experiment=fl_vs_ce"]
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    gamma, alpha = (2.0, 0.25) if loss == "fl" else (0.0, 0.75)
    config: dict = {"loss": {"gamma": gamma, "alpha": alpha}, "train": {"seed": seed}}
    if implementation:
        config["implementation"] = implementation
    metrics = {"AP": ap, "AP50": ap + 10, "AP75": ap - 10, "config": config}
    if implementation:
        metrics["implementation"] = implementation
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_torchvision_runs_are_rows_of_their_own_and_not_the_reference(tmp_path: Path):
    root = tmp_path / "sweep"
    for job, (loss, seed, ap) in enumerate([("fl", 0, 70.0), ("fl", 1, 72.0), ("ce_a75", 0, 80.0),
                                            ("ce_a75", 1, 82.0)]):
        _job(root / str(job), loss, seed, ap, None)
    for seed, ap in ((0, 75.0), (1, 77.0)):  # better than retina's FL: still not the reference
        _job(root / "torchvision" / f"fl_{seed}", "fl", seed, ap, "torchvision")
    runs = collect_runs(root)
    assert [r.name for r in runs][-2:] == ["torchvision/fl_0", "torchvision/fl_1"]
    assert [run_axes(r)["implementation"] for r in runs] == ["retina"] * 4 + ["torchvision"] * 2
    table = build_table(runs)
    assert "implementation" in table.columns
    fl, ce, tv = table.groups
    assert fl.reference and fl.axes["implementation"] == "retina"
    assert tv.axes["implementation"] == "torchvision" and tv.stats["AP"].mean == 76.0
    assert tv.delta.diff == 5.0
    assert "torchvision" in format_markdown(table)


def test_a_sweep_without_references_has_no_implementation_axis(tmp_path: Path):
    root = tmp_path / "sweep"
    _job(root / "0", "fl", 0, 70.0, None)
    (runs,) = collect_runs(root)
    assert "implementation" not in run_axes(runs)


def _with_model(folder: Path, model: dict) -> None:
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["config"]["model"] = model
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_a_reference_run_from_an_older_config_joins_its_seeds(tmp_path: Path):
    """A run whose model config predates some keys used their defaults: it is the same
    setting as the runs that list them, one row; and a retina run with the same loss options
    as torchvision's stays apart from the torchvision rows (the implementation column)."""
    from retina.modeling.build import model_defaults

    full = {"_target_": "retina.modeling.build_retinanet", **model_defaults(),
            "loss_normalizer": "image", "box_loss": "l1", "torchvision_anchors": True}
    old = {k: v for k, v in full.items() if k not in ("norm_eps", "scale_clamp", "pixel_mean")}
    root = tmp_path / "sweep"
    for job, seed in enumerate((0, 1)):
        _job(root / str(job), "fl", seed, 70.0 + seed, None)
        _with_model(root / str(job), full)
    for seed, model in ((0, old), (1, full)):
        folder = root / "torchvision" / f"fl_{seed}"
        _job(folder, "fl", seed, 75.0 + seed, "torchvision")
        _with_model(folder, model)
    table = build_table(collect_runs(root))
    assert table.columns[0] == "implementation"
    retina, tv = table.groups
    assert tv.n == 2 and tv.axes["implementation"] == "torchvision"
    assert retina.n == 2 and retina.axes["implementation"] == "retina"


def test_a_running_job_is_said_to_run_and_joins_its_seeds(tmp_path: Path):
    """A job another process trains now (its folder's lock held, no metrics.json, only Hydra's
    unresolved config) is "running", in the row of its finished seeds, not a row of its own;
    once the lock is gone the same folder reads as unfinished."""
    from retina.engine.rundir import lock_holder, lock_run_dir, release_run_dir

    root = tmp_path / "sweep"
    finished = {"optim": {"base_lr": 0.04}, "data": {"root": "./data/shapes"},
                "study": {"lr": 0.04}}
    for job, seed in enumerate((0, 1)):
        _job(root / str(job), "fl", seed, 70.0 + seed, None)
        metrics = json.loads((root / str(job) / "metrics.json").read_text())
        metrics["config"].update(finished)
        (root / str(job) / "metrics.json").write_text(json.dumps(metrics))
    running = root / "2"
    (running / ".hydra").mkdir(parents=True)
    overrides = ["ablation/fl_vs_ce=fl", "train.seed=2", "+experiment=fl_vs_ce"]
    (running / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {"loss": {"gamma": 2.0, "alpha": 0.25}, "train": {"seed": 2},
              "optim": {"base_lr": "${study.lr}"}, "study": {"lr": 0.04},
              "data": {"root": "${paths.data_dir}/shapes"}, "paths": {"data_dir": "./data"}}
    (running / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    lock_run_dir(running)
    try:
        assert lock_holder(running) == str(os.getpid())
        table = build_table(collect_runs(root))
        (group,) = table.groups
        assert group.n == 2 and [r.status for r in group.runs] == ["done", "done", "running"]
        assert "1 running" in format_markdown(table)
    finally:
        release_run_dir(running)
    assert lock_holder(running) is None and lock_holder(tmp_path / "nowhere") is None
    assert [r.status for r in collect_runs(root)] == ["done", "done", "unfinished"]

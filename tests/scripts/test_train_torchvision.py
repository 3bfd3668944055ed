"""scripts/train_torchvision.py: a tiny run writes retina-train's files with
``implementation: torchvision``, a rerun skips it, and bad input is one line, exit 1."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from retina.analysis.axes import run_axes
from retina.analysis.multirun import collect_runs

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_torchvision.py"


def _script():
    spec = importlib.util.spec_from_file_location("train_torchvision", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny(tmp_path: Path) -> list[str]:
    return ["+experiment=fl_vs_ce", "ablation/fl_vs_ce=ce_a75", "train.seed=0",
            "train.max_iter=2", "train.batch_size=2", "train.eval_period=1",
            "train.num_workers=0", "train.vis_images=0", "train.eval_batch_size=2",
            f"paths.data_dir={tmp_path / 'data'}", "data.generator.train=4",
            "data.generator.val=2", "data.generator.size=64"]


def test_tiny_run_then_rerun_skips_or_resumes(tmp_path: Path, capsys: pytest.CaptureFixture,
                                              caplog: pytest.LogCaptureFixture):
    script = _script()
    run_dir = tmp_path / "sweep" / "torchvision" / "ce_a75_0"
    with caplog.at_level(logging.INFO, logger="retina.train_torchvision"):
        assert script.main([str(run_dir), *_tiny(tmp_path)]) == 0
    assert "model.box_loss=l1 (config: smooth_l1)" in caplog.text  # said, not silent
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["implementation"] == "torchvision" and metrics["iteration"] == 2
    assert metrics["config"]["loss"]["gamma"] == 0.0 and metrics["config"]["loss"]["alpha"] == 0.75
    assert 0.0 <= metrics["AP"] <= 100.0
    history = json.loads((run_dir / "metrics_history.json").read_text())
    assert [h["iteration"] for h in history] == [1, 2]
    assert metrics["config"]["model"]["loss_normalizer"] == "image"  # torchvision's settings
    assert metrics["config"]["model"]["box_loss"] == "l1"
    (run,) = collect_runs(tmp_path / "sweep")  # a reference row of the sweep folder
    axes = run_axes(run)
    assert run.status == "done" and axes["implementation"] == "torchvision"
    assert axes["loss"] == "focal" and axes["alpha"] == 0.75
    before = (run_dir / "metrics.json").stat().st_mtime_ns
    assert script.main([str(run_dir), *_tiny(tmp_path)]) == 0
    assert "finished, skipped" in capsys.readouterr().out
    assert (run_dir / "metrics.json").stat().st_mtime_ns == before
    (run_dir / "metrics.json").unlink()  # interrupted after its last checkpoint: resumes
    with caplog.at_level(logging.INFO, logger="retina.train"):
        assert script.main([str(run_dir), *_tiny(tmp_path)]) == 0
    assert "resuming from" in caplog.text  # the checkpoint's config is this run's
    assert json.loads((run_dir / "metrics.json").read_text())["iteration"] == 2


def test_bad_input_is_one_line(tmp_path: Path):
    """Run as a user runs it (a fresh process: the config tree must compose on its own)."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[1])}
    command = [sys.executable, str(SCRIPT), str(run_dir), *_tiny(tmp_path), "loss=ohem"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1
    err = done.stderr.strip()
    assert err.startswith("train_torchvision.py: error: loss.gamma") and "\n" not in err
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.parametrize(("override", "key"), [
    ("model.box_loss=giou", "model.box_loss"),
    ("model.loss_normalizer=batch", "model.loss_normalizer"),
    ("++model.torchvision_anchors=false", "model.torchvision_anchors"),
    ("model.smooth_l1_beta=0.5", "model.smooth_l1_beta"),
    ("model.anchor_offset=0.5", "model.anchor_offset"),
])
def test_a_setting_torchvision_would_not_follow_is_refused(tmp_path: Path, override: str,
                                                          key: str, capsys):
    run_dir = tmp_path / "run"
    assert _script().main([str(run_dir), *_tiny(tmp_path), override]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"train_torchvision.py: error: {key}") and "\n" not in err
    assert not run_dir.exists()  # refused before anything is written


def test_torchvision_own_loss_settings_pass():
    _script().check_loss_overrides(["model.box_loss=l1", "model.loss_normalizer=image",
                                    "++model.torchvision_anchors=true", "train.seed=1"])

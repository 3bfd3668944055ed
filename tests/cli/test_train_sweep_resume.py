"""Resumable sweeps: rerunning ``retina-train -m`` with the same ``hydra.sweep.dir`` skips
finished jobs and resumes interrupted ones from their last checkpoint, bit-exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from retina.cli import train as train_module
from retina.engine.sweep import job_state
from retina.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _tiny(data: Path, max_iter: int = 8) -> list[str]:
    size = 64
    return [
        f"data.root={data}", f"data.train_transforms.min_size={size}",
        f"data.train_transforms.max_size={size}", f"data.val_transforms.min_size={size}",
        f"data.val_transforms.max_size={size}", "model.fpn_channels=16", "model.num_convs=1",
        f"train.max_iter={max_iter}", "train.batch_size=2", "train.eval_batch_size=2",
        "train.checkpoint_period=2", "train.num_workers=0", "train.deterministic=true",
        "train.device=cpu", "train.vis_images=0", "train.eval_period=4",
        "schedule.steps=[6]", "schedule.warmup_iters=1",
    ]


def _job(tmp_path: Path, metrics: dict | None = None, checkpoint: bool = False) -> Path:
    job = tmp_path / "0"
    (job / "checkpoints").mkdir(parents=True)
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if checkpoint:
        (job / "checkpoints" / "model_0000002.pt").write_bytes(b"x")
    return job


def test_job_state_finished_resume_fresh(tmp_path: Path):
    config = {"loss": {"alpha": 0.25}, "train": {"max_iter": 8}}
    assert job_state(tmp_path / "none", config).kind == "fresh"
    job = _job(tmp_path, checkpoint=True)
    assert job_state(job, config).kind == "resume"
    (job / "metrics.json").write_text(json.dumps({"AP": 12.5, "config": config}))
    state = job_state(job, config)
    assert state.kind == "finished" and state.ap == 12.5
    (job / "metrics.json").write_text(json.dumps({"status": "diverged", "config": config}))
    assert job_state(job, config).kind == "finished" and job_state(job, config).ap is None
    (job / "metrics.json").write_text(json.dumps({"status": "failed", "error": "bad data"}))
    assert job_state(job, config).kind == "resume"  # a failure on input runs again
    (job / "metrics.json").write_text(json.dumps({"AP": 1.0, "config": config}))
    with pytest.raises(ConfigError, match="loss.alpha: .*belongs to another sweep"):
        job_state(job, {**config, "loss": {"alpha": 0.5}})
    # a key the finished job's config lacks (added by a later version) is not a difference
    assert job_state(job, {**config, "loss": {"alpha": 0.25, "backend": "auto"}}).ap == 1.0
    # how often a job saves (or how many files it keeps) does not make it another job
    saves = {"max_iter": 8, "checkpoint_period": 100, "keep_checkpoints": 1}
    assert job_state(job, {**config, "train": saves}).ap == 1.0


def test_prepare_sweep_job_sets_resume_or_skips(tmp_path: Path, capsys):
    cfg = OmegaConf.create({"train": {"resume": False, "max_iter": 8}})
    job = _job(tmp_path, checkpoint=True)
    assert train_module._prepare_sweep_job(cfg, job, "3") is False and cfg.train.resume
    assert "job 3: interrupted, resuming" in capsys.readouterr().out
    (job / "metrics.json").write_text(json.dumps({"AP": 40.0}))
    assert train_module._prepare_sweep_job(cfg, job, "3") == 40.0
    assert "job 3: finished, skipped" in capsys.readouterr().out


def _snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    """The job's results; Hydra itself rewrites ``.hydra/`` and appends to the job's log."""
    return {str(p.relative_to(directory)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(directory.rglob("*"))
            if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"}


def _final(run_dir: Path) -> dict:
    state = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu",
                       weights_only=True)
    return {k: state[k] for k in ("model", "optimizer", "iteration", "rng", "data_position")}


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.slow
def test_a_sweep_killed_mid_job_resumes_bit_exactly(tmp_path: Path):
    from retina.data import make_shapes_dataset

    data = make_shapes_dataset(tmp_path / "shapes", train=6, val=2, size=64, workers=1)
    sweep = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "retina.cli.train", "-m", "loss.alpha=0.25,0.5",
            f"hydra.sweep.dir={sweep}", *_tiny(data)]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    marker = sweep / "1" / "checkpoints" / "model_0000002.pt"
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists(), proc.stdout.read().decode()[-2000:]
    assert not (sweep / "1" / "metrics.json").exists(), "job 1 ended before the kill"
    first = _snapshot(sweep / "0")
    assert "metrics.json" in first and "metrics_history.json" in first
    log_before = (sweep / "0" / "train.log").read_text()

    rerun = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "job 0: finished, skipped" in rerun.stdout
    assert "job 1: interrupted, resuming" in rerun.stdout
    assert _snapshot(sweep / "0") == first  # untouched: same bytes, same mtimes
    assert (sweep / "0" / "train.log").read_text().startswith(log_before)

    # the uninterrupted reference saves once, at the end: how often a run saves must not
    # change what it trains (a sweep rerun may change train.checkpoint_period)
    reference = tmp_path / "reference"
    single = subprocess.run(
        [sys.executable, "-m", "retina.cli.train", "loss.alpha=0.5",
         f"hydra.run.dir={reference}", *_tiny(data), "train.checkpoint_period=100"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    assert _same(_final(sweep / "1"), _final(reference))
    resumed = json.loads((sweep / "1" / "metrics.json").read_text())
    assert resumed["AP"] == json.loads((reference / "metrics.json").read_text())["AP"]
    history = json.loads((sweep / "1" / "metrics_history.json").read_text())
    assert history == json.loads((reference / "metrics_history.json").read_text())
    assert [e["iteration"] for e in history] == [4, 8]

    from retina.cli.report import main as report_main

    assert report_main([str(sweep)]) == 0  # curves.png from the sweep's periodic evaluations
    assert (sweep / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

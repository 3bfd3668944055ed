"""scripts/fl_vs_ce_queue.sh: a lane's single runs land in the job folders the row's sweep
gives the same jobs (so ``row`` and ``retina-report`` see them as the sweep's), finished
jobs are skipped, interrupted ones resume, and a bad loss name is one line, exit 1."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from retina.analysis.multirun import expected_jobs
from retina.config import CONFIG_DIR

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fl_vs_ce_queue.sh"
ROWS = ("shapes_short", "coco_like_short", "shapes_long")


def _queue(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RETINA_QUEUE_PRINT": "1", "RETINA_QUEUE_OUT": str(out)}
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def _commands(out: Path, *args: str) -> list[list[str]]:
    done = _queue(out, *args)
    assert done.returncode == 0, done.stderr
    return [shlex.split(line) for line in done.stdout.splitlines() if line.strip()]


def _value(args: list[str], key: str) -> str:
    found = [a.split("=", 1)[1] for a in args if a.startswith(f"{key}=")]
    assert len(found) == 1, (key, args)
    return found[0]


def _sweep_jobs(out: Path, row: str) -> tuple[Path, list[list[str]]]:
    """The sweep folder of ``retina ROW`` and its jobs, expanded the way retina-report does
    from the ``multirun.yaml`` Hydra would write."""
    (command,) = _commands(out, "retina", row)
    assert command[:2] == ["retina-train", "-m"]
    task = [a for a in command[2:] if not a.startswith("hydra.")]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[a.split(",")[0] if "," in a else a for a in task],
                      return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    sweep_dir = Path(_value(command, "hydra.sweep.dir"))
    sweep_dir.mkdir(parents=True)
    multirun = {"hydra": {"sweeper": {"params": params}, "overrides": {"task": task}}}
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump(multirun), encoding="utf-8")
    return sweep_dir, expected_jobs(sweep_dir)


@pytest.mark.parametrize("row", ROWS)
def test_lanes_use_the_sweeps_job_folders(tmp_path: Path, row: str):
    sweep_dir, jobs = _sweep_jobs(tmp_path, row)
    assert len(jobs) == 6
    seen: set[int] = set()
    for loss in ("fl", "ce_a75"):
        commands = _commands(tmp_path, "lane", row, loss)
        retina = [c for c in commands if c[0] == "retina-train"]
        tv = [c for c in commands if "scripts/train_torchvision.py" in c]
        assert len(retina) == 3 and len(tv) == 3
        for command in retina:
            run_dir = Path(_value(command, "hydra.run.dir"))
            assert run_dir.parent == sweep_dir
            num = int(run_dir.name)
            seen.add(num)
            overrides = [a for a in command[1:] if not a.startswith("hydra.run.dir=")]
            assert sorted(overrides) == sorted(jobs[num]), (num, overrides, jobs[num])
        for command, seed in zip(tv, range(3), strict=True):
            assert command[2] == str(sweep_dir / "torchvision" / f"{loss}_{seed}")
            assert _value(command, "ablation/fl_vs_ce") == loss
            assert _value(command, "train.seed") == str(seed)
    assert seen == set(range(6))


def test_lane_skips_finished_and_resumes_interrupted(tmp_path: Path):
    sweep_dir, jobs = _sweep_jobs(tmp_path, "shapes_long")
    (sweep_dir / "3").mkdir()
    (sweep_dir / "3" / "metrics.json").write_text('{"AP": 50.0}', encoding="utf-8")
    (sweep_dir / "4" / "checkpoints").mkdir(parents=True)
    done = _queue(tmp_path, "lane", "shapes_long", "ce_a75")
    assert done.returncode == 0, done.stderr
    retina = [shlex.split(line) for line in done.stdout.splitlines()
              if line.startswith("retina-train")]
    dirs = [Path(_value(c, "hydra.run.dir")).name for c in retina]
    assert dirs == ["4", "5"]
    assert "train.resume=true" in retina[0] and "train.resume=true" not in retina[1]
    assert f"{sweep_dir / '3'}: finished, skipped" in done.stderr


def test_unknown_loss_or_row_is_one_line(tmp_path: Path):
    for args in (("lane", "shapes_long", "ce_a50"), ("lane", "nope", "fl")):
        done = _queue(tmp_path, *args)
        assert done.returncode == 1
        assert done.stdout == ""
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr

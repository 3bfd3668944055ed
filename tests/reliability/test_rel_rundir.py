"""A run directory belongs to one run: a fresh run refuses one holding checkpoints, a second
process on a locked directory stops with one line, an explicit resume is allowed, and the
default directories of runs started within the same second differ."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from relhelp import checkpoint_files, train_args

from retina.config import CONFIG_DIR
from retina.engine.rundir import LOCK_NAME


def test_fresh_run_refuses_a_directory_with_checkpoints(cli, tiny_shapes, reference_run, tmp_path):
    run_dir = Path(shutil.copytree(reference_run["dir"], tmp_path / "run"))
    before = {p.name: p.read_bytes() for p in checkpoint_files(run_dir / "checkpoints")}
    result = cli.run("retina-train", train_args(tiny_shapes, run_dir), cwd=tmp_path)
    result.assert_clean_error("holds checkpoints", "train.resume=true", "hydra.run.dir")
    after = {p.name: p.read_bytes() for p in checkpoint_files(run_dir / "checkpoints")}
    assert after == before


@pytest.mark.parametrize("resume", ["false", "true"])
def test_second_process_on_a_locked_run_dir_stops(cli, tiny_shapes, tmp_path, resume):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / LOCK_NAME, "a+") as lock:  # another retina process holds it
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        args = train_args(tiny_shapes, run_dir, **{"train.resume": resume})
        result = cli.run("retina-train", args, cwd=tmp_path)
    result.assert_clean_error("in use by another retina process", f"pid {os.getpid()}")
    assert not (run_dir / "checkpoints").exists()


def test_resume_of_a_finished_run_is_allowed(cli, tiny_shapes, reference_run, tmp_path):
    run_dir = Path(shutil.copytree(reference_run["dir"], tmp_path / "run"))
    (run_dir / LOCK_NAME).write_text("12345\n")  # a stale lock file of a dead process
    args = train_args(tiny_shapes, run_dir, **{"train.resume": "true", "train.max_iter": 5})
    result = cli.run("retina-train", args, cwd=tmp_path)
    assert result.rc == 0, result.stderr[-3000:]


def _expand_now(pattern: str, when: datetime) -> str:
    return re.sub(r"\$\{now:([^}]*)\}", lambda m: when.strftime(m.group(1)), pattern)


@pytest.mark.parametrize("key", ["run", "sweep"])
def test_default_run_dirs_of_the_same_second_differ(key):
    import yaml

    pattern = yaml.safe_load((CONFIG_DIR / "hydra" / "default.yaml").read_text())[key]["dir"]
    start = datetime(2026, 1, 2, 3, 4, 5, 1000)
    names = {_expand_now(pattern, start + timedelta(microseconds=i * 250)) for i in range(3)}
    assert len(names) == 3, names


def test_sweep_job_into_an_earlier_run_leaves_it_untouched(
    cli, tiny_shapes, reference_run, tmp_path
):
    sweep = tmp_path / "sweep"
    job = Path(shutil.copytree(reference_run["dir"], sweep / "0"))
    metrics = (job / "metrics.json").read_bytes()
    args = [a for a in train_args(tiny_shapes, tmp_path) if not a.startswith("hydra.run.dir")]
    result = cli.run("retina-train", ["-m", f"hydra.sweep.dir={sweep}", "train.seed=7", *args],
                     cwd=tmp_path)  # fmt: skip
    assert result.rc == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    # refused by the resumable sweep (a finished job of another config) before the run-dir
    # check (a folder holding another run's checkpoints) is reached; either way, one line
    assert "belongs to another sweep" in result.stderr or (
        "job 0 failed" in result.stderr and "holds checkpoints" in result.stderr
    ), result.stderr
    assert (job / "metrics.json").read_bytes() == metrics

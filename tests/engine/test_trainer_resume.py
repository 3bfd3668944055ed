"""A deterministic CPU run killed with SIGKILL after a checkpoint and resumed with
``train.resume=true`` ends with weights bit-identical to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from retina.data import make_shapes_dataset
from retina.engine.checkpoint import load_checkpoint

MAX_ITER = 8


def _command(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "retina.cli.train",
        f"data.root={root}", f"hydra.run.dir={run_dir}",
        "train.deterministic=true", "train.device=cpu", f"train.max_iter={MAX_ITER}",
        "train.batch_size=2", "train.checkpoint_period=2", "train.keep_checkpoints=10",
        "train.eval_period=0", "train.num_workers=0", "train.vis_images=0",
        "train.eval_batch_size=4", "schedule.steps=[5]", "schedule.warmup_iters=3",
        # augmentations on, so the per-sample seeding is exercised
        "data.train_transforms.min_size=[96,128]", "data.train_transforms.max_size=128",
        "data.val_transforms.min_size=128", "data.val_transforms.max_size=128",
        *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "shapes"
    make_shapes_dataset(root, train=10, val=2, size=128, seed=1, workers=1)
    return root


@pytest.mark.slow  # three training processes (~30 s on an idle 2-core machine)
def test_sigkill_then_resume_is_bit_exact(shapes_root, tmp_path):
    # The interrupted run first, so the reference run does not slow down the kill timing.
    run = tmp_path / "killed"
    proc = subprocess.Popen(_command(shapes_root, run), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    first = run / "checkpoints" / "model_0000002.pt"
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert first.exists(), proc.stderr.read().decode()[-2000:] if proc.poll() else "timeout"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(run / "checkpoints" / "last.pt")["iteration"]
    assert killed_at < MAX_ITER, "the run finished before it could be killed"

    resumed = subprocess.run(_command(shapes_root, run, "train.resume=true"), env=_env(),
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {run / 'checkpoints'}" in resumed.stdout + resumed.stderr

    reference = tmp_path / "reference"
    straight = subprocess.run(_command(shapes_root, reference), env=_env(),
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-3000:]

    a = load_checkpoint(reference / "checkpoints" / "last.pt")
    b = load_checkpoint(run / "checkpoints" / "last.pt")
    assert a["iteration"] == b["iteration"] == MAX_ITER
    assert a["model"].keys() == b["model"].keys()
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(),
                      strict=True):  # fmt: skip
        assert torch.equal(pa["momentum_buffer"], pb["momentum_buffer"])
    assert a["data_position"] == b["data_position"]
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == MAX_ITER

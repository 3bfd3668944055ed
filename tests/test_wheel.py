"""A wheel built from the source tree works on its own: it carries the Hydra configs and the
C source as package data, and ``retina-train`` installed from it (outside the repository,
without the editable install) composes its config and trains a few iterations."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from retina.config import CONFIG_DIR
from retina.data import make_shapes_dataset

REPO = Path(__file__).resolve().parents[1]
SIZE = 64


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, f"{args[:4]}: {proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel`` of a copy of the project's files (so the build leaves nothing behind)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "retina", src / "retina",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))  # fmt: skip
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--quiet", "-w", str(root / "dist"), str(src)], cwd=root)  # fmt: skip
    (found,) = (root / "dist").glob("retina-*.whl")
    return found


def test_the_wheel_carries_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {
        f"retina/configs/{p.relative_to(CONFIG_DIR).as_posix()}"
        for p in CONFIG_DIR.rglob("*.yaml")
    }
    assert configs and configs <= names, sorted(configs - names)


def test_installed_wheel_trains_from_outside_the_repository(wheel, tmp_path):
    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target",
          str(site), str(wheel)], cwd=tmp_path)  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    data = make_shapes_dataset(work / "shapes", train=4, val=2, size=SIZE, seed=1, workers=1)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1")

    where = _run([sys.executable, "-c", "import retina.config as c; print(c.CONFIG_DIR)"],
                 cwd=work, env=env).stdout.strip()  # fmt: skip
    assert Path(where) == site / "retina" / "configs"

    run_dir = work / "run"
    overrides = [
        f"data.root={data}", f"hydra.run.dir={run_dir}", "train.device=cpu",
        "train.max_iter=2", "train.batch_size=2", "train.eval_batch_size=2",
        "train.checkpoint_period=2", "train.num_workers=0", "train.vis_images=0",
        "schedule.steps=[1]", "schedule.warmup_iters=1", "model.fpn_channels=8",
        "model.num_convs=1", "loss.backend=eager",
        *(f"data.{split}_transforms.{k}={SIZE}" for split in ("train", "val")
          for k in ("min_size", "max_size")),
    ]  # fmt: skip
    _run([sys.executable, "-m", "retina.cli.train", *overrides], cwd=work, env=env)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["iteration"] == 2 and isinstance(metrics["AP"], float)
    assert metrics["focal_backend"] == "eager"
    assert (run_dir / "checkpoints" / "last.pt").is_file()

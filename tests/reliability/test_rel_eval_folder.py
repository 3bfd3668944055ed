"""``retina-eval`` writes only into a folder it owns, and counts only the images it evaluated
(issue 23)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from relhelp import IMAGE_SIZE

from retina.engine import rundir


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _eval_args(checkpoint: Path, run_dir: Path, *extra: str) -> list[str]:
    return [f"checkpoint={checkpoint}", f"hydra.run.dir={run_dir}", "eval.device=cpu",
            "eval.num_workers=0", *extra]


def test_eval_refuses_a_training_runs_folder(cli, reference_run, tmp_path):
    run = Path(shutil.copytree(reference_run["dir"], tmp_path / "run"))
    before = _snapshot(run)
    result = cli.run("retina-eval", _eval_args(run / "checkpoints" / "last.pt", run),
                     cwd=tmp_path)  # fmt: skip
    result.assert_clean_error("hydra.run.dir", "training run's or sweep's folder")
    assert _snapshot(run) == before  # metrics.json and .hydra/config.yaml untouched


def test_eval_takes_the_folders_lock(cli, reference_run, tmp_path):
    busy = tmp_path / "busy"  # a run that has just started there: nothing written yet
    rundir.lock_run_dir(busy)
    try:
        result = cli.run("retina-eval", _eval_args(reference_run["dir"] / "checkpoints" /
                                                   "last.pt", busy), cwd=tmp_path)
    finally:
        rundir.release_run_dir(busy)
    result.assert_clean_error("in use by another retina process")
    assert sorted(p.name for p in busy.iterdir()) == [rundir.LOCK_NAME]


def test_eval_leaves_unreadable_images_out(cli, reference_run, shapes_copy, tmp_path):
    val = json.loads((shapes_copy / "annotations" / "instances_val.json").read_text())
    (shapes_copy / "val" / val["images"][0]["file_name"]).write_bytes(b"not a png")
    out = tmp_path / "eval"
    sizes = [f"data.val_transforms.{k}={IMAGE_SIZE}" for k in ("min_size", "max_size")]
    result = cli.run("retina-eval", _eval_args(
        reference_run["dir"] / "checkpoints" / "last.pt", out, "data=shapes",
        f"data.root={shapes_copy}", "data.max_broken_fraction=0.5", *sizes), cwd=tmp_path)
    assert result.rc == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["num_images"], metrics["skipped_images"]) == (1, 1)
    assert "1 of 2 images were not evaluated" in (out / "eval.log").read_text()

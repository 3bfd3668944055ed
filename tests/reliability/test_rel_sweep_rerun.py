"""A rerun sweep is compared with its folders before Hydra writes into them (issue 23):
other data, another sweep's values or another seed stop it with one line and leave every
file of the sweep folder as it was; a resume never continues another seed's checkpoint or
starts past ``train.max_iter``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from relhelp import train_args


def _sweep_args(data: Path, sweep: Path, *extra: str) -> list[str]:
    args = [a for a in train_args(data, sweep, **{"train.max_iter": 2, "schedule.steps": "[1]"})
            if not a.startswith("hydra.run.dir=")]
    return ["-m", *extra, f"hydra.sweep.dir={sweep}", *args]


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file of the sweep folder, ``.hydra/``, logs and ``multirun.yaml`` included."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_sweep(cli, tiny_shapes, tmp_path_factory) -> Path:
    """A finished two-job sweep ``loss.gamma=0,2`` (copy before changing)."""
    sweep = tmp_path_factory.mktemp("sweep") / "S"
    result = cli.run("retina-train", _sweep_args(tiny_shapes, sweep, "loss.gamma=0,2"),
                     cwd=sweep.parent)
    assert result.rc == 0, result.stderr[-3000:]
    assert (sweep / "1" / "metrics.json").is_file()
    return sweep


@pytest.mark.parametrize(
    ("sweep_override", "other_data", "needle"),
    [("loss.gamma=0,2", True, "data.root"),    # the same sweep on other data
     ("loss.gamma=2", False, "loss.gamma")],   # job 0 of a 0,2 sweep is gamma=0
)
def test_a_differing_rerun_is_refused_before_anything_is_written(
    cli, finished_sweep, shapes_copy, tmp_path, sweep_override, other_data, needle
):
    sweep = Path(shutil.copytree(finished_sweep, tmp_path / "S"))
    before = _snapshot(sweep)
    data = shapes_copy if other_data else _data_root(finished_sweep)
    result = cli.run("retina-train", _sweep_args(data, sweep, sweep_override), cwd=tmp_path)
    line = result.assert_clean_error(needle, "belongs to another sweep")
    assert str(sweep / "0") in line
    assert _snapshot(sweep) == before  # .hydra/overrides.yaml, multirun.yaml: untouched


def _data_root(sweep: Path) -> Path:
    import json

    return Path(json.loads((sweep / "0" / "metrics.json").read_text())["config"]["data"]["root"])


@pytest.mark.slow  # not a regression test: the skip worked before
def test_an_identical_rerun_skips_and_keeps_the_results(cli, finished_sweep, tmp_path):
    sweep = Path(shutil.copytree(finished_sweep, tmp_path / "S"))
    metrics = (sweep / "0" / "metrics.json").read_bytes()
    result = cli.run("retina-train", _sweep_args(_data_root(finished_sweep), sweep,
                                                 "loss.gamma=0,2", "train.num_workers=0"),
                     cwd=tmp_path)  # fmt: skip
    assert result.rc == 0, result.stderr[-3000:]
    assert result.stdout.count(": finished, skipped\n") == 2
    assert (sweep / "0" / "metrics.json").read_bytes() == metrics


def test_an_interrupted_job_is_not_resumed_under_another_seed(cli, finished_sweep, tmp_path):
    sweep = Path(shutil.copytree(finished_sweep, tmp_path / "S"))
    (sweep / "1" / "metrics.json").unlink()  # job 1 killed after its checkpoints
    before = _snapshot(sweep)
    args = _sweep_args(_data_root(finished_sweep), sweep, "loss.gamma=2",
                       "hydra.sweep.subdir=1", "train.seed=7")
    line = cli.run("retina-train", args, cwd=tmp_path).assert_clean_error("train.seed")
    assert str(sweep / "1" / ".hydra" / "config.yaml") in line
    assert _snapshot(sweep) == before


def test_resume_compares_the_seed_and_the_iteration(cli, reference_run, tiny_shapes, tmp_path):
    run = Path(shutil.copytree(reference_run["dir"], tmp_path / "run"))
    before = _snapshot(run)
    other_seed = train_args(tiny_shapes, run, **{"train.resume": "true", "train.seed": 7})
    cli.run("retina-train", other_seed, cwd=tmp_path).assert_clean_error(
        "cannot resume with changed train.seed")
    shorter = train_args(tiny_shapes, run, **{"train.resume": "true", "train.max_iter": 2})
    cli.run("retina-train", shorter, cwd=tmp_path).assert_clean_error(
        "train.max_iter: 2 is below the iteration 4")
    assert _results(run) == {k: v for k, v in before.items() if _is_result(k)}


def _is_result(name: str) -> bool:
    """Not what a run rewrites before its checks (Hydra's record, the log, the lock)."""
    return not (name.startswith(".hydra") or name.endswith(".log") or name == ".retina.lock")


def _results(run: Path) -> dict[str, tuple[int, bytes]]:
    return {k: v for k, v in _snapshot(run).items() if _is_result(k)}

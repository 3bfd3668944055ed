"""SIGKILL at random points of ``retina-train`` (also in the middle of a checkpoint write),
then ``train.resume=true``: the run continues from the newest complete checkpoint, never a
partial one, and ends bit-identical to an uninterrupted deterministic CPU run."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import pytest
from relhelp import (
    CliServer,
    checkpoint_files,
    final_state,
    temp_files,
    tensors_equal,
    train_args,
)

from retina.engine.checkpoint import CheckpointError, load_checkpoint

RESUMED = re.compile(r"resuming from (\S+) \(iteration (\d+)\)")


def _newest_complete(ckpt_dir: Path) -> int | None:
    """Iteration of the newest checkpoint; every file under a checkpoint name must load."""
    newest = None
    for path in checkpoint_files(ckpt_dir):
        try:
            state = load_checkpoint(path)
        except CheckpointError as err:
            pytest.fail(f"a partial or corrupt file sits under a checkpoint name: {err}")
        newest = max(newest or 0, int(state["iteration"]))
    return newest


def _check_resume_message(output: str, expected: int | None) -> None:
    found = RESUMED.search(output)
    if expected is None:
        assert found is None and "starting fresh" in output, output[-2000:]
    else:
        assert found is not None, output[-2000:]
        assert int(found.group(2)) == expected, found.group(0)


def _segment(
    cli: CliServer, data: Path, run_dir: Path, kill: dict | None, faults: dict | None = None
) -> tuple[bool, int | None]:
    """One resumed run, killed as asked; checks the resume point and the checkpoint files.
    Returns (killed, newest complete iteration afterwards)."""
    ckpt_dir = run_dir / "checkpoints"
    before = _newest_complete(ckpt_dir)
    args = train_args(data, run_dir, **{"train.resume": "true"})
    result = cli.run("retina-train", args, cwd=run_dir.parent, kill=kill, faults=faults)
    assert not result.timed_out, result.stderr[-3000:]
    killed = result.rc == -9
    assert killed or result.rc == 0, f"rc={result.rc}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    output = result.stdout + result.stderr  # Hydra's job logging goes to stdout
    if result.rc == 0 or "resuming" in output or "starting fresh" in output:
        _check_resume_message(output, before)
    return killed, _newest_complete(ckpt_dir)


def _finish_and_compare(
    cli: CliServer, data: Path, run_dir: Path, reference_run: dict, strict_rng: bool = True
) -> None:
    """Run to the end and compare with the uninterrupted run. ``strict_rng=False`` leaves
    out the RNG state when the run resumes with no iteration left (a known difference, see
    :func:`test_resume_after_a_kill_during_the_final_evaluation`)."""
    resumes_at_end = _newest_complete(run_dir / "checkpoints") == 4
    killed, newest = _segment(cli, data, run_dir, kill=None)
    assert not killed and newest == 4
    assert not temp_files(run_dir / "checkpoints")
    ours, ref = final_state(run_dir), reference_run["state"]
    if resumes_at_end and not strict_rng:
        ours, ref = {**ours, "rng": None}, {**ref, "rng": None}
    diff = tensors_equal(ours, ref)
    assert not diff, f"resumed run differs from the uninterrupted one at {diff[:5]}"


def test_resume_after_a_kill_during_the_final_evaluation(
    cli: CliServer, tiny_shapes: Path, tmp_path: Path, reference_run: dict
) -> None:
    """Killed after its last checkpoint, while evaluating: the resumed run only evaluates
    and must leave the final checkpoint as the uninterrupted run wrote it (RNG included, so
    that extending ``train.max_iter`` later continues bit-exactly)."""
    run_dir = Path(shutil.copytree(reference_run["dir"], tmp_path / "run"))
    for name in ("metrics.json", "coco_results.json"):
        (run_dir / name).unlink(missing_ok=True)
    _finish_and_compare(cli, tiny_shapes, run_dir, reference_run)
    assert (run_dir / "metrics.json").is_file()


def test_kill_during_checkpoint_write_and_at_random_times(
    cli: CliServer, tiny_shapes: Path, tmp_path: Path, reference_run: dict
) -> None:
    """Three kill points: inside the write of the 2nd checkpoint, then at two random
    moments of the resumed runs; the finished run equals the uninterrupted one."""
    run_dir = tmp_path / "run"
    markers = tmp_path / "markers"
    markers.mkdir()
    slow = {"slow_save": {"marker_dir": str(markers), "chunks": 4, "delay": 0.3}}
    killed, newest = _segment(
        cli, tiny_shapes, run_dir, kill={"marker": str(markers / "save_2")}, faults=slow
    )
    assert killed and newest == 1, "the kill inside the 2nd write must leave checkpoint 1"
    assert temp_files(run_dir / "checkpoints"), "the kill did not land inside the write"

    rng = random.Random(1234)
    for _ in range(2):
        delay = rng.uniform(0.3, 0.9) * reference_run["seconds"]
        _segment(cli, tiny_shapes, run_dir, kill={"after": delay})
    _finish_and_compare(cli, tiny_shapes, run_dir, reference_run)


@pytest.mark.slow
def test_twenty_random_kill_points(
    cli: CliServer, tiny_shapes: Path, tmp_path: Path, reference_run: dict
) -> None:
    """At least 20 SIGKILLs at random moments (a third of them inside a slowed checkpoint
    write); every interrupted run is resumed to the end and compared bit for bit."""
    rng = random.Random(20)
    kills = mid_write = sequences = 0
    while kills < 20:
        sequences += 1
        run_dir = tmp_path / f"run{sequences}"
        markers = tmp_path / f"markers{sequences}"
        markers.mkdir()
        for _ in range(4):  # a few kills per sequence, then run it to the end
            if rng.random() < 1 / 3:
                save = rng.randint(1, 3)
                faults = {"slow_save": {"marker_dir": str(markers), "chunks": 5, "delay": 0.2}}
                kill = {"marker": str(markers / f"save_{save}"), "delay": rng.uniform(0, 0.6)}
                for old in markers.iterdir():
                    old.unlink()
            else:
                faults, kill = None, {"after": rng.uniform(0.1, 1.0) * reference_run["seconds"]}
            killed, _ = _segment(cli, tiny_shapes, run_dir, kill=kill, faults=faults)
            kills += killed
            mid_write += killed and faults is not None
            if not killed:  # the run got to the end first
                break
        _finish_and_compare(cli, tiny_shapes, run_dir, reference_run, strict_rng=False)
    print(f"{kills} kills ({mid_write} inside a checkpoint write) over {sequences} runs")
    assert mid_write >= 3, f"only {mid_write} kills landed in a checkpoint write"

"""Diverging training: non-finite losses (injected NaN) and a huge learning rate. Steps are
skipped and logged, the run stops after ``train.max_nonfinite`` in a row with a clear
message, the last good checkpoint is kept and no NaN/inf ever reaches a saved checkpoint."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from relhelp import CliServer, checkpoint_files, load_raw, temp_files, train_args

SKIPPED = re.compile(r"iteration (\d+): non-finite (loss|gradient norm) .*update skipped")


def _non_finite_tensors(obj, where: str = "") -> list[str]:
    """Paths of floating tensors holding NaN/inf anywhere in a checkpoint."""
    if isinstance(obj, torch.Tensor):
        bad = obj.is_floating_point() and not bool(torch.isfinite(obj).all())
        return [where] if bad else []
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _non_finite_tensors(v, f"{where}.{k}")]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in _non_finite_tensors(v, f"{where}[{i}]")]
    return []


def _assert_checkpoints_finite(ckpt_dir: Path) -> list[int]:
    iterations = []
    for path in checkpoint_files(ckpt_dir):
        state = load_raw(path)
        bad = _non_finite_tensors(state)
        assert not bad, f"{path} holds NaN/inf in {bad[:5]}"
        iterations.append(int(state["iteration"]))
    assert not temp_files(ckpt_dir)
    return iterations


def test_isolated_nan_loss_is_skipped_and_training_finishes(
    cli: CliServer, tiny_shapes: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    result = cli.run(
        "retina-train",
        train_args(tiny_shapes, run_dir),
        cwd=tmp_path,
        faults={"nan_loss": {"calls": [2]}},
    )
    output = result.stdout + result.stderr
    assert result.rc == 0, output[-3000:]
    assert [m.group(1) for m in SKIPPED.finditer(output)] == ["2"], output[-3000:]
    assert "1 in a row" in output
    assert max(_assert_checkpoints_finite(run_dir / "checkpoints")) == 4
    assert (run_dir / "metrics.json").is_file()


def test_nan_losses_in_a_row_stop_the_run(
    cli: CliServer, tiny_shapes: Path, tmp_path: Path
) -> None:
    """Losses 2, 3 and 4 are NaN with ``train.max_nonfinite=3``: exit 1 with one line at
    iteration 4; checkpoints 1-3 hold the unchanged, finite weights of iteration 1."""
    run_dir = tmp_path / "run"
    args = train_args(tiny_shapes, run_dir, **{"train.max_iter": 6, "train.max_nonfinite": 3})
    result = cli.run("retina-train", args, cwd=tmp_path, faults={"nan_loss": {"calls": [2, 3, 4]}})
    result.assert_clean_error("iteration 4", "3 non-finite losses/gradients in a row")
    output = result.stdout + result.stderr
    assert [m.group(1) for m in SKIPPED.finditer(output)] == ["2", "3", "4"]
    ckpt_dir = run_dir / "checkpoints"
    assert max(_assert_checkpoints_finite(ckpt_dir)) == 3
    first, last = load_raw(ckpt_dir / "model_0000001.pt"), load_raw(ckpt_dir / "last.pt")
    for name, value in first["model"].items():
        if value.is_floating_point() and "running" not in name:
            assert torch.equal(value, last["model"][name]), f"{name} changed on a skipped step"
    assert not (run_dir / "metrics.json").exists()


def test_huge_learning_rate_stops_with_a_clear_message(
    cli: CliServer, tiny_shapes: Path, tmp_path: Path
) -> None:
    """``optim.base_lr=1e6``: the weights blow up within a few steps. The run must stop with
    the one-line non-finite message (not a traceback, not a checkpoint refusal) and every
    checkpoint it left must be finite, optimizer state included."""
    run_dir = tmp_path / "run"
    args = train_args(
        tiny_shapes,
        run_dir,
        **{"train.max_iter": 12, "train.max_nonfinite": 3, "optim.base_lr": 1.0e6},
    )
    result = cli.run("retina-train", args, cwd=tmp_path)
    result.assert_clean_error("non-finite losses/gradients in a row")
    assert SKIPPED.search(result.stdout + result.stderr)
    iterations = _assert_checkpoints_finite(run_dir / "checkpoints")
    assert iterations, "no checkpoint kept"
    assert not (run_dir / "metrics.json").exists()

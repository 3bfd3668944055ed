"""A full disk or an unwritable output while writing a checkpoint or results (simulated by
failing writes with ENOSPC, or an output path below a regular file, since the tests run as
root and permissions would not stop them): a clear error, the previous checkpoint intact, no
temporary or half-written file left."""

from __future__ import annotations

import errno
import io
import shutil
from pathlib import Path

import pytest
import torch
from relhelp import (
    CliServer,
    checkpoint_files,
    final_state,
    load_raw,
    temp_files,
    tensors_equal,
    train_args,
)
from torch import nn

from retina.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _state(value: float) -> dict:
    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight.fill_(value)
    return {"model": model.state_dict(), "cat_ids": [1, 2, 3]}


def test_save_checkpoint_on_a_full_disk_keeps_the_previous_one(tmp_path: Path, monkeypatch):
    directory = tmp_path / "checkpoints"
    save_checkpoint(_state(1.0), directory, 1)
    before = {p.name: p.read_bytes() for p in checkpoint_files(directory)}
    real = torch.save

    def disk_full(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real(obj, buf, *args, **kwargs)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(_state(2.0), directory, 2)
    message = str(info.value)
    assert "model_0000002.pt" in message and "No space left on device" in message
    assert "\n" not in message
    assert {p.name: p.read_bytes() for p in checkpoint_files(directory)} == before
    assert not temp_files(directory)
    assert load_checkpoint(directory / "last.pt")["iteration"] == 1


def test_save_checkpoint_when_last_pt_cannot_be_written(tmp_path: Path, monkeypatch):
    """No hard links on this file system and the disk fills while copying ``last.pt``."""
    directory = tmp_path / "checkpoints"
    save_checkpoint(_state(1.0), directory, 1)
    last_before = (directory / "last.pt").read_bytes()

    def no_link(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    def full_copy(src, dst, length=0):
        dst.write(src.read(100))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.link", no_link)
    monkeypatch.setattr("shutil.copyfileobj", full_copy)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(_state(2.0), directory, 2)
    assert (directory / "last.pt").read_bytes() == last_before
    assert not temp_files(directory)


def test_checkpoint_directory_below_a_regular_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("x")
    directory = blocker / "checkpoints"
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(_state(1.0), directory, 1)
    assert str(directory) in str(info.value) and "\n" not in str(info.value)


def test_train_stops_cleanly_when_the_disk_fills_and_resumes_after(
    cli: CliServer, tiny_shapes: Path, reference_run: dict, tmp_path: Path
) -> None:
    """The 3rd checkpoint write hits ENOSPC: exit 1 with one line naming the file, 1 and 2
    intact, no temp file; once there is space again, resuming ends bit-identical."""
    run_dir = tmp_path / "run"
    ckpt_dir = run_dir / "checkpoints"
    result = cli.run(
        "retina-train",
        train_args(tiny_shapes, run_dir),
        cwd=tmp_path,
        faults={"enospc_save": {"call": 3}},
    )
    result.assert_clean_error("model_0000003.pt", "No space left on device")
    assert not temp_files(ckpt_dir)
    assert sorted(p.name for p in checkpoint_files(ckpt_dir)) == [
        "last.pt", "model_0000001.pt", "model_0000002.pt",
    ]  # fmt: skip
    assert load_checkpoint(ckpt_dir / "last.pt")["iteration"] == 2
    assert not (run_dir / "metrics.json").exists()

    resumed = cli.run(
        "retina-train", train_args(tiny_shapes, run_dir, **{"train.resume": "true"}), cwd=tmp_path
    )
    assert resumed.rc == 0, resumed.stderr[-3000:]
    diff = tensors_equal(final_state(run_dir), reference_run["state"])
    assert not diff, f"resumed run differs from the uninterrupted one at {diff[:5]}"


@pytest.mark.parametrize(
    ("prog", "name"),
    [
        ("retina-train", "coco_results.json"),
        pytest.param("retina-train", "metrics.json", marks=pytest.mark.slow),
        pytest.param("retina-eval", "coco_results.json", marks=pytest.mark.slow),
        ("retina-eval", "metrics.json"),
    ],
)
def test_results_on_a_full_disk(
    prog: str, name: str, cli: CliServer, tiny_shapes: Path, reference_run: dict, tmp_path: Path
) -> None:
    """Writing ``coco_results.json`` / ``metrics.json`` (or its temporary file) hits ENOSPC:
    a one-line error naming the file, no half-written or temporary results file, the
    checkpoints untouched."""
    run_dir = tmp_path / "run"
    if prog == "retina-train":
        argv = train_args(tiny_shapes, run_dir)
    else:
        source = reference_run["dir"] / "checkpoints" / "last.pt"
        checkpoint = tmp_path / "last.pt"
        shutil.copyfile(source, checkpoint)
        argv = [f"checkpoint={checkpoint}", f"hydra.run.dir={run_dir}"]
    result = cli.run(prog, argv, cwd=tmp_path, faults={"enospc_files": {"names": [name]}})
    line = result.assert_clean_error("No space left on device")
    assert name in line, line
    leftovers = sorted(p.name for p in run_dir.glob(f"{name}*"))
    assert not leftovers, f"half-written or temporary results left: {leftovers}"
    if prog == "retina-train":
        state = load_raw(run_dir / "checkpoints" / "last.pt")
        assert state["iteration"] == 4

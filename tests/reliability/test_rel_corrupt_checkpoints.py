"""Damaged and foreign checkpoints: a clear one-line error naming the file from
``load_checkpoint`` and ``retina-eval``; ``train.resume=true`` falls back to the previous
valid checkpoint and says so."""

from __future__ import annotations

import random
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from relhelp import CliServer, final_state, tensors_equal, train_args

from retina.engine.checkpoint import CheckpointError, load_checkpoint
from retina.modeling import build_retinanet


def _largest_record_offset(data: bytes, path: Path) -> int:
    """Offset of the middle of the largest tensor record inside a torch.save zip."""
    with zipfile.ZipFile(path) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    return start + info.file_size // 2


def _flip_byte(data: bytes, path: Path) -> bytes:
    out = bytearray(data)
    out[_largest_record_offset(data, path)] ^= 0x40
    return bytes(out)


# Each corruption maps the valid file's bytes (and path) to the damaged bytes.
CORRUPTIONS: dict[str, Callable[[bytes, Path], bytes]] = {
    "empty": lambda d, p: b"",
    "truncated_to_1kb": lambda d, p: d[:1024],
    "truncated_half": lambda d, p: d[: len(d) // 2],
    "truncated_tail": lambda d, p: d[:-200],  # the zip's central directory is lost
    "zeroed": lambda d, p: bytes(len(d)),
    "random_bytes": lambda d, p: random.Random(0).randbytes(len(d)),
    "text_file": lambda d, p: b"model: not really a checkpoint\n" * 10,
    "flipped_byte_in_weights": _flip_byte,  # the zip's CRC32 no longer matches
}
SLOW = pytest.mark.slow
EVAL_CASES = [
    pytest.param("truncated_half", marks=SLOW),
    "zeroed",
    pytest.param("random_bytes", marks=SLOW),
    "flipped_byte_in_weights",
]


@pytest.fixture(scope="module")
def valid_bytes(reference_run: dict) -> bytes:
    return (reference_run["dir"] / "checkpoints" / "model_0000004.pt").read_bytes()


def _damaged(tmp_path: Path, valid: bytes, kind: str) -> Path:
    path = tmp_path / "checkpoints" / "model_0000004.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(valid)
    path.write_bytes(CORRUPTIONS[kind](valid, path))
    return path


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_load_checkpoint_names_the_damaged_file(
    kind: str, valid_bytes: bytes, tmp_path: Path
) -> None:
    path = _damaged(tmp_path, valid_bytes, kind)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message, message


def _foreign_model_checkpoint(reference_run: dict, tmp_path: Path) -> Path:
    """A retina checkpoint whose weights come from a differently built RetinaNet."""
    state = torch.load(
        reference_run["dir"] / "checkpoints" / "last.pt", map_location="cpu", weights_only=True
    )
    other = build_retinanet(num_classes=5, depth=10, norm="bn", fpn_channels=32, num_convs=2)
    state["model"] = other.state_dict()
    path = tmp_path / "other_model.pt"
    torch.save(state, path)
    return path


def test_checkpoint_of_another_model_is_refused_by_eval(
    cli: CliServer, reference_run: dict, tmp_path: Path
) -> None:
    path = _foreign_model_checkpoint(reference_run, tmp_path)
    run_dir = tmp_path / "eval"
    result = cli.run(
        "retina-eval", [f"checkpoint={path}", f"hydra.run.dir={run_dir}"], cwd=tmp_path
    )
    result.assert_clean_error(str(path), "does not match the model")
    assert not (run_dir / "metrics.json").exists()
    assert not (run_dir / "coco_results.json").exists()


def test_state_dict_of_a_torchvision_model_is_refused_by_eval(
    cli: CliServer, tmp_path: Path
) -> None:
    from torchvision.models import resnet18

    path = tmp_path / "resnet18.pth"
    torch.save(resnet18().state_dict(), path)
    result = cli.run(
        "retina-eval", [f"checkpoint={path}", f"hydra.run.dir={tmp_path}/e"], cwd=tmp_path
    )
    result.assert_clean_error(str(path))


@pytest.mark.parametrize("kind", EVAL_CASES)
def test_eval_of_a_damaged_checkpoint_fails_cleanly(
    kind: str, cli: CliServer, valid_bytes: bytes, tmp_path: Path
) -> None:
    path = _damaged(tmp_path, valid_bytes, kind)
    run_dir = tmp_path / "eval"
    result = cli.run(
        "retina-eval", [f"checkpoint={path}", f"hydra.run.dir={run_dir}"], cwd=tmp_path
    )
    result.assert_clean_error(str(path))
    assert not (run_dir / "metrics.json").exists(), "metrics written from a damaged checkpoint"
    assert not (run_dir / "coco_results.json").exists()


def test_eval_of_the_valid_checkpoint_works(
    cli: CliServer, reference_run: dict, tmp_path: Path
) -> None:
    """Control case for the ones above: the undamaged file evaluates."""
    path = reference_run["dir"] / "checkpoints" / "last.pt"
    run_dir = tmp_path / "eval"
    result = cli.run(
        "retina-eval", [f"checkpoint={path}", f"hydra.run.dir={run_dir}"], cwd=tmp_path
    )
    assert result.rc == 0, result.stderr[-3000:]
    assert (run_dir / "metrics.json").is_file() and (run_dir / "coco_results.json").is_file()


@pytest.mark.parametrize(
    ("newest", "older", "expected"),
    [
        ("truncated_half", None, 3),
        pytest.param("zeroed", "random_bytes", 2, marks=SLOW),
        ("flipped_byte_in_weights", None, 3),
    ],
)
def test_resume_falls_back_to_the_previous_valid_checkpoint(
    newest: str,
    older: str | None,
    expected: int,
    cli: CliServer,
    reference_run: dict,
    tiny_shapes: Path,
    tmp_path: Path,
) -> None:
    """The newest checkpoint (and ``last.pt``, its hard link) is damaged, maybe the one
    before too: the resumed run names the skipped files, starts from the newest valid one
    and still ends bit-identical to the uninterrupted run."""
    run_dir = Path(shutil.copytree(reference_run["dir"], tmp_path / "run"))
    ckpt_dir = run_dir / "checkpoints"
    damaged = [ckpt_dir / "model_0000004.pt"]
    if older is not None:
        damaged.append(ckpt_dir / "model_0000003.pt")
    (ckpt_dir / "last.pt").unlink()
    for path, kind in zip(damaged, (newest, older), strict=False):
        path.write_bytes(CORRUPTIONS[kind](path.read_bytes(), path))
    shutil.copyfile(damaged[0], ckpt_dir / "last.pt")  # last.pt = the newest, damaged too

    args = train_args(tiny_shapes, run_dir, **{"train.resume": "true"})
    result = cli.run("retina-train", args, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.rc == 0, output[-3000:]
    for path in damaged:
        assert f"skipping unusable checkpoint {path}" in output, output[-3000:]
    assert f"(iteration {expected})" in output and "resuming from" in output, output[-3000:]
    diff = tensors_equal(final_state(run_dir), reference_run["state"])
    assert not diff, f"resumed run differs from the uninterrupted one at {diff[:5]}"

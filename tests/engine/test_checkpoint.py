"""Checkpoints: atomic writes, rotation, corrupt-file handling, resume fallback."""

import errno
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import retina.utils.io
from retina.engine import checkpoint as ckpt
from retina.engine.checkpoint import (
    CheckpointError,
    find_resume_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)


def _state(value: float = 1.0) -> dict:
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(value)
    return {
        "model": model.state_dict(),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]},
        "rng": {"torch": torch.arange(8, dtype=torch.uint8), "python": (3, (1, 2), None)},
        "cat_ids": [1, 3],
        "class_names": ["a", "b"],
        "config": {"train": {"max_iter": 10}},
    }


def _temps(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.startswith(".tmp")]


def test_round_trip_last_and_rotation(tmp_path):
    for it in (10, 20, 30, 40):
        path = save_checkpoint(_state(it), tmp_path, it, keep=2)
        assert path == tmp_path / f"model_{it:07d}.pt"
    assert [it for it, _ in list_checkpoints(tmp_path)] == [30, 40]
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["iteration"] == 40
    assert torch.equal(last["model"]["weight"], torch.full((2, 3), 40.0))
    assert last["class_names"] == ["a", "b"]
    assert torch.equal(last["rng"]["torch"], torch.arange(8, dtype=torch.uint8))
    assert last["rng"]["python"] == (3, (1, 2), None)
    assert not _temps(tmp_path)


def test_keep_zero_keeps_all(tmp_path):
    for it in range(5):
        save_checkpoint(_state(), tmp_path, it, keep=0)
    assert len(list_checkpoints(tmp_path)) == 5


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_refuses_non_finite_model(tmp_path, bad):
    save_checkpoint(_state(1.0), tmp_path, 1)
    state = _state()
    state["model"]["bias"][0] = bad
    with pytest.raises(CheckpointError, match="NaN/inf in bias"):
        save_checkpoint(state, tmp_path, 2)
    assert [it for it, _ in list_checkpoints(tmp_path)] == [1]
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 1


def test_refuses_objects_weights_only_cannot_load(tmp_path):
    state = _state()
    state["rng"]["numpy"] = np.random.get_state()
    with pytest.raises(CheckpointError, match=r"state\['rng'\]\['numpy'\].*numpy.ndarray"):
        save_checkpoint(state, tmp_path, 1)
    assert not any(tmp_path.iterdir())


def _corrupt_files(tmp_path: Path) -> dict[str, Path]:
    good = save_checkpoint(_state(), tmp_path / "src", 1)
    data = good.read_bytes()
    files = {
        "truncated": data[: len(data) // 2],
        "zeroed": b"\0" * len(data),
        "random": np.random.default_rng(0).bytes(4096),
        "empty": b"",
    }
    out = {}
    for name, content in files.items():
        out[name] = tmp_path / f"{name}.pt"
        out[name].write_bytes(content)
    return out


@pytest.mark.parametrize("kind", ["truncated", "zeroed", "random", "empty"])
def test_load_corrupt_file_gives_one_line_error(tmp_path, kind):
    path = _corrupt_files(tmp_path)[kind]
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message


class _Payload:
    """Pickles to a call of os.system: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_load_refuses_pickle_with_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "iteration": 0, "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refused by weights_only loading"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, match",
    [
        ({"iteration": 3}, r"missing key\(s\) \['model'\]"),
        ([1, 2], "not dict"),
        ({"model": {"w": 1}, "iteration": 3}, "not a state dict of tensors"),
    ],
)
def test_load_wrong_structure(tmp_path, content, match):
    path = tmp_path / "x.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pt")


def test_resume_skips_corrupt_newest(tmp_path, caplog):
    directory = tmp_path / "ckpt"
    for it in (100, 200, 300):
        save_checkpoint(_state(it), directory, it, keep=0)
    newest = directory / "model_0000300.pt"
    newest.unlink()  # break the hard link to last.pt before damaging the file
    newest.write_bytes(b"\0" * 100)
    (directory / "last.pt").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="retina.engine.checkpoint"):
        found = find_resume_checkpoint(directory)
    assert found is not None
    path, state = found
    assert path.name == "model_0000200.pt" and state["iteration"] == 200
    assert "model_0000300.pt" in caplog.text and "last.pt" in caplog.text


def test_resume_uses_last_when_numbered_gone(tmp_path):
    save_checkpoint(_state(), tmp_path, 7)
    (tmp_path / "model_0000007.pt").unlink()
    path, state = find_resume_checkpoint(tmp_path)
    assert path.name == "last.pt" and state["iteration"] == 7


def test_resume_none(tmp_path):
    assert find_resume_checkpoint(tmp_path / "missing") is None
    assert find_resume_checkpoint(tmp_path) is None


def test_read_only_directory(tmp_path, monkeypatch):
    save_checkpoint(_state(1.0), tmp_path, 1)
    if os.geteuid() == 0:  # root ignores permission bits: simulate the refusal

        def refuse(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(retina.utils.io.tempfile, "mkstemp", refuse)
    else:
        tmp_path.chmod(0o555)
    try:
        with pytest.raises(CheckpointError, match="Permission denied") as info:
            save_checkpoint(_state(2.0), tmp_path, 2)
    finally:
        tmp_path.chmod(0o755)
    assert "\n" not in str(info.value)
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 1
    assert not _temps(tmp_path)


def test_disk_full_leaves_previous_intact(tmp_path, monkeypatch):
    save_checkpoint(_state(1.0), tmp_path, 1)
    before = (tmp_path / "last.pt").read_bytes()

    def full_disk(obj, f):
        f.write(b"partial data")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_checkpoint(_state(2.0), tmp_path, 2)
    assert (tmp_path / "last.pt").read_bytes() == before
    assert [it for it, _ in list_checkpoints(tmp_path)] == [1]
    assert not _temps(tmp_path)


def test_stale_temp_files_are_cleaned(tmp_path):
    (tmp_path / ".tmp_ckpt_leftover.pt").write_bytes(b"half")
    save_checkpoint(_state(), tmp_path, 1)
    assert not _temps(tmp_path)


def test_sigkill_during_saves_leaves_valid_checkpoints(tmp_path):
    """Kill a process that saves in a loop: every file under a checkpoint name loads."""
    script = textwrap.dedent(
        f"""
        import torch
        from retina.engine.checkpoint import save_checkpoint
        big = {{"w": torch.randn(2_000_000)}}
        it = 0
        while True:
            save_checkpoint({{"model": big}}, {str(tmp_path)!r}, it, keep=2)
            it += 1
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while len(list_checkpoints(tmp_path)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    numbered = list_checkpoints(tmp_path)
    assert numbered
    for _, path in numbered:
        load_checkpoint(path)
    path, state = find_resume_checkpoint(tmp_path)
    assert state["iteration"] == numbered[-1][0]


def test_load_model_state_mismatch_lists_keys(tmp_path):
    small = nn.Sequential(nn.Linear(3, 2))
    other = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    with pytest.raises(CheckpointError) as info:
        load_model_state(small, other.state_dict(), "ckpt.pt")
    message = str(info.value)
    assert message.startswith("ckpt.pt: checkpoint does not match the model")
    assert "1.weight" in message and "0.weight (4, 3) vs (2, 3)" in message


def test_load_model_state_strips_wrapper_prefixes():
    model = nn.Linear(3, 2)
    source = nn.Linear(3, 2)
    wrapped = {f"module.{k}": v for k, v in source.state_dict().items()}
    load_model_state(model, wrapped, "x.pt")
    assert torch.equal(model.weight, source.weight)


TINY = {
    "_target_": "retina.modeling.build_retinanet", "depth": 10, "weights": None, "norm": "bn",
    "freeze_at": 0, "fpn_channels": 16, "num_convs": 1, "anchor_sizes": [16, 32, 64, 128, 256],
}  # fmt: skip


def test_build_model_from_checkpoint_round_trip():
    from hydra.utils import instantiate

    torch.manual_seed(0)
    model = instantiate(TINY, num_classes=2)
    state = {"model": model.state_dict(), "cat_ids": [4, 9], "class_names": ["a", "b"],
             "config": {"model": TINY, "loss": {"_target_": "retina.modeling.FocalLoss"}}}
    rebuilt = ckpt.build_model_from_checkpoint(state, "x.pt", overrides={"score_thresh": 0.5})
    assert rebuilt.score_thresh == 0.5
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key


@pytest.mark.parametrize(
    "loss, built",
    [
        ({"_target_": "retina.modeling.losses.FocalLoss", "backend": "native"},
         "FocalLoss(gamma=2.0, alpha=0.25, backend='auto')"),
        ({"_target_": "retina.modeling.losses.OHEMLoss", "backend": "compile"}, "backend='auto'"),
        ({"_target_": "retina.modeling.losses.FocalLossStar", "gamma": 4.0, "backend": "auto"},
         "FocalLossStar(gamma=4.0, beta=0.0)"),
    ],
)  # fmt: skip
def test_a_loss_config_of_an_older_version_is_repaired_with_a_warning(loss, built, caplog):
    """Checkpoints from before the native/compile focal backends were deleted name them, and
    FL* took a backend then: the model still builds, with one warning naming the change."""
    model = instantiate_tiny()
    state = {"model": model.state_dict(), "cat_ids": [4, 9], "class_names": ["a", "b"],
             "config": {"model": TINY, "loss": loss}}  # fmt: skip
    with caplog.at_level("WARNING", logger="retina.engine.checkpoint"):
        rebuilt = ckpt.build_model_from_checkpoint(state, "x.pt")
    assert built in repr(rebuilt.cls_loss)
    (record,) = caplog.records
    assert record.getMessage().startswith("x.pt: config.loss of an older version: ")
    assert loss["backend"] in record.getMessage()


def instantiate_tiny():
    from hydra.utils import instantiate

    torch.manual_seed(0)
    return instantiate(TINY, num_classes=2)


@pytest.mark.parametrize(
    "config, match",
    [
        ({}, "no model config"),
        ({"model": {"_target_": "os.system", "command": "true"}}, "refusing _target_ 'os.system'"),
        ({"model": TINY, "loss": {"_target_": "builtins.eval"}}, "refusing _target_"),
        ({"model": {**TINY, "depth": 7}}, "cannot build the model"),
    ],
)
def test_build_model_from_checkpoint_refuses(config, match):
    state = {"model": {}, "cat_ids": [1], "class_names": ["a"], "config": config}
    with pytest.raises(CheckpointError, match=match):
        ckpt.build_model_from_checkpoint(state, "x.pt")


def test_load_detects_flipped_bit_in_weights(tmp_path):
    import zipfile

    path = save_checkpoint({"model": {"w": torch.randn(10_000)}}, tmp_path, 1)
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data = bytearray(path.read_bytes())
    data[offset + info.file_size // 2] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="file is corrupt .Bad CRC-32"):
        load_checkpoint(path)

"""SIGTERM is handled like Ctrl-C: one line, exit status 143, no temporary file left; a
dataset generation interrupted or killed leaves nothing behind for good."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf
from relhelp import temp_files, train_args

from retina.engine.build import prepare_data_root
from retina.engine.distributed import DistInfo


def test_sigterm_during_a_checkpoint_write(cli, tiny_shapes, tmp_path):
    run_dir = tmp_path / "run"
    markers = tmp_path / "markers"
    markers.mkdir()
    faults = {"slow_save": {"marker_dir": str(markers), "chunks": 20, "delay": 0.05}}
    kill = {"marker": str(markers / "save_1"), "delay": 0.1, "signal": "TERM"}
    result = cli.run("retina-train", train_args(tiny_shapes, run_dir), cwd=tmp_path,
                     faults=faults, kill=kill, timeout=120)  # fmt: skip
    assert not result.timed_out
    assert result.rc == 143, f"rc={result.rc}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "retina-train: terminated" in result.stderr
    assert temp_files(run_dir / "checkpoints") == []


def _shapes_cfg(root: Path):
    return OmegaConf.create({
        "name": "shapes", "root": str(root),
        "generator": {"train": 2, "val": 1, "size": 64, "seed": 0, "num_classes": 2},
    })  # fmt: skip


def test_killed_generation_is_cleaned_on_the_next_start(tmp_path):
    root = tmp_path / "data" / "shapes"
    root.parent.mkdir()
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)  # a pid that no longer runs
    stale = root.with_name(f".shapes.tmp{dead}")
    (stale / "train").mkdir(parents=True)
    (stale / "train" / "big.png").write_bytes(b"x" * 1000)
    prepare_data_root(_shapes_cfg(root), DistInfo())
    assert (root / "annotations" / "instances_train.json").is_file()
    assert sorted(p.name for p in root.parent.iterdir()) == ["shapes"]


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    import retina.data.shapes as shapes

    root = tmp_path / "data" / "shapes"

    def interrupted(out, **kwargs):
        Path(out, "train").mkdir(parents=True)
        Path(out, "train", "0.png").write_bytes(b"x")
        raise KeyboardInterrupt  # what Ctrl-C becomes (a real SIGINT is delivered later
        # than this returns when the machine is busy, which made the test flaky)

    monkeypatch.setattr(shapes, "make_shapes_dataset", interrupted)
    try:
        prepare_data_root(_shapes_cfg(root), DistInfo())
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the interrupt was swallowed")
    assert not root.parent.exists() or list(root.parent.iterdir()) == []

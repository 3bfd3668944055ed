"""Fixtures of the reliability tests: a tiny dataset and the console-script fork server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from relhelp import IMAGE_SIZE, CliServer, final_state, train_args

from retina.data.shapes import make_shapes_dataset


@pytest.fixture(scope="session")
def cli(tmp_path_factory) -> Iterator[CliServer]:
    server = CliServer(tmp_path_factory.mktemp("cli_logs"))
    yield server
    server.close()


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory) -> Path:
    """Six train and two val shapes images of 64x64 (generated once; copy before mutating)."""
    out = tmp_path_factory.mktemp("tiny_shapes") / "shapes"
    return make_shapes_dataset(out, train=6, val=2, size=IMAGE_SIZE, seed=5, workers=1)


@pytest.fixture
def shapes_copy(tiny_shapes, tmp_path) -> Path:
    """A private copy of the tiny dataset that a test may damage."""
    return Path(shutil.copytree(tiny_shapes, tmp_path / "shapes"))


@pytest.fixture(scope="session")
def reference_run(cli: CliServer, tiny_shapes: Path, tmp_path_factory) -> dict:
    """An uninterrupted 4-iteration run: its directory (checkpoints 2, 3, 4 and ``last.pt``;
    copy before changing), final state and duration."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = cli.run("retina-train", train_args(tiny_shapes, run_dir), cwd=run_dir.parent)
    assert result.rc == 0, result.stderr[-3000:]
    return {"dir": run_dir, "state": final_state(run_dir), "seconds": result.seconds}

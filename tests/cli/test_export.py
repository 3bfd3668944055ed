"""retina-export as a command: one line and exit status 1 on a bad value, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from retina.cli.export import main

REPO = Path(__file__).resolve().parents[2]


def assert_one_line(returncode: int, stderr: str, words: str, cwd: Path) -> None:
    assert returncode == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("retina-export: error:"), lines
    assert words in lines[0]
    assert not list(cwd.glob("m.*"))


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["format=onnx", "out=m.onnx"], "checkpoint: is required"),
        (["checkpoint=x.pt", "format=keras", "out=m.onnx"], "format: must be one of"),
        (["checkpoint=x.pt", "format=onnx", "out=m.onnx"], "x.pt: no such checkpoint file"),
    ],
)
def test_bad_values_are_one_line(tmp_path, monkeypatch, run_main, args, words):
    monkeypatch.chdir(tmp_path)
    proc = run_main(main, "retina-export", *args, f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line(proc.returncode, proc.stderr, words, tmp_path)


def test_bad_value_is_one_line_from_a_fresh_process(tmp_path):
    """As a user runs it: nothing that a first import prints reaches stderr either."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "retina.cli.export", "checkpoint=x.pt", "format=onnx",
         "out=m.onnx", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert_one_line(proc.returncode, proc.stderr, "x.pt: no such checkpoint file", tmp_path)

"""retina-export as a command: one line and exit status 1 on a bad value, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_export(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": ""}
    return subprocess.run([sys.executable, "-m", "retina.cli.export", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["format=onnx", "out=m.onnx"], "checkpoint: is required"),
        (["checkpoint=x.pt", "format=keras", "out=m.onnx"], "format: must be one of"),
        (["checkpoint=x.pt", "format=onnx", "out=m.onnx"], "x.pt: no such checkpoint file"),
    ],
)
def test_bad_values_are_one_line(tmp_path, args, words):
    proc = run_export(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("retina-export: error:"), lines
    assert words in lines[0]
    assert not list(tmp_path.glob("m.*"))

"""ONNX models in retina-eval and retina-predict: the same AP and detections as the checkpoint,
and one line for an .onnx file retina-export did not write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from retina.errors import CheckpointError, ConfigError
from retina.export.runtime import load_detector

REPO = Path(__file__).resolve().parents[2]


def run_cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": ""}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def foreign_onnx(path: Path) -> Path:
    """A valid ONNX model (Identity) without retina's metadata."""
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 3, 4, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["boxes"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_onnx_files_retina_export_did_not_write_are_one_line(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07garbage" * 50)
    cases = {
        foreign_onnx(tmp_path / "foreign.onnx"): "not an ONNX model written by retina-export",
        garbage: "not a readable ONNX model",
        tmp_path / "missing.onnx": "no such ONNX model",
    }
    for path, words in cases.items():
        with pytest.raises(CheckpointError, match=words) as err:
            load_detector(str(path))
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_threshold_below_the_exported_one_is_refused(tiny_onnx):
    with pytest.raises(ConfigError, match="score_thresh: 0.01 is below .* exported"):
        load_detector(str(tiny_onnx), {"score_thresh": 0.01})


def test_eval_and_predict_with_the_onnx_model_match_the_checkpoint(tiny_checkpoint, tiny_onnx,
                                                                   tmp_path):  # fmt: skip
    metrics = {}
    for name, model in (("ckpt", tiny_checkpoint), ("onnx", tiny_onnx)):
        proc = run_cli("retina.cli.eval", f"checkpoint={model}", f"hydra.run.dir={tmp_path / name}",
                       "eval.num_workers=0", cwd=tmp_path)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        metrics[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert metrics["ckpt"]["AP50"] > 0  # the tiny model has learnt something
    for key in ("AP", "AP50", "AR100"):
        assert abs(metrics["onnx"][key] - metrics["ckpt"][key]) <= 0.1, key

    images = tiny_checkpoint.parent.parent / "shapes/val"
    found = {}
    for name, model in (("ckpt", tiny_checkpoint), ("onnx", tiny_onnx)):
        out = tmp_path / f"pred_{name}"
        proc = run_cli("retina.cli.predict", f"checkpoint={model}", f"input={images}",
                       f"output={out}", f"hydra.run.dir={tmp_path / ('p' + name)}",
                       "score_thresh=0.1", cwd=tmp_path)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        found[name] = json.loads((out / "detections.json").read_text())["images"]
    assert sum(len(r["detections"]) for r in found["ckpt"]) > 0
    for want, got in zip(found["ckpt"], found["onnx"], strict=True):
        assert [d["category_id"] for d in got["detections"]] == \
            [d["category_id"] for d in want["detections"]]  # fmt: skip
        for a, b in zip(want["detections"], got["detections"], strict=True):
            assert max(abs(u - v) for u, v in zip(a["box"], b["box"], strict=True)) <= 0.2
            assert abs(a["score"] - b["score"]) <= 2e-4


def test_predict_with_a_foreign_onnx_file_is_one_line(tmp_path):
    model = foreign_onnx(tmp_path / "foreign.onnx")
    image = tmp_path / "images"
    image.mkdir()
    from PIL import Image

    Image.new("RGB", (160, 160), (90, 90, 90)).save(image / "a.png")
    proc = run_cli("retina.cli.predict", f"checkpoint={model}", f"input={image}",
                   f"output={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'run'}",
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not an ONNX model written by retina-export" in lines[0], lines
    assert not (tmp_path / "out").exists()

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
from omegaconf import OmegaConf
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


def eager_and_onnx_ap(checkpoint: Path, onnx_model: Path) -> dict[str, dict]:
    """What retina-eval does, in this process, for both models."""
    from torch.utils.data import DataLoader

    from retina.data import collate_detection
    from retina.engine.evaluation import evaluate_detections, run_inference
    from retina.engine.inference import build_val_dataset, data_config

    metrics = {}
    for name, path in (("ckpt", checkpoint), ("onnx", onnx_model)):
        model, state = load_detector(str(path))
        data_cfg, where = data_config(OmegaConf.create({"data": None}), state, str(path))
        dataset = build_val_dataset(data_cfg, Path(str(data_cfg.root)), where)
        loader = DataLoader(dataset, batch_size=4, collate_fn=collate_detection)
        metrics[name] = evaluate_detections(run_inference(model, loader, "cpu"), dataset)
    return metrics


def test_eval_ap_of_the_onnx_model_equals_the_checkpoints(tiny_checkpoint, tiny_onnx):
    metrics = eager_and_onnx_ap(tiny_checkpoint, tiny_onnx)
    assert metrics["ckpt"]["AP50"] > 0  # the tiny model has learnt something
    for key in ("AP", "AP50", "AR100"):
        assert abs(metrics["onnx"][key] - metrics["ckpt"][key]) <= 0.1, key


def test_predict_with_the_onnx_model_finds_the_checkpoints_detections(tiny_checkpoint, tiny_onnx,
                                                                      tmp_path):  # fmt: skip
    from retina.cli.predict import predict

    images = tiny_checkpoint.parent.parent / "shapes/val"
    found = {}
    for name, model in (("ckpt", tiny_checkpoint), ("onnx", tiny_onnx)):
        cfg = OmegaConf.create({
            "checkpoint": str(model), "input": str(images), "output": str(tmp_path / name),
            "score_thresh": 0.1, "device": "cpu", "batch_size": 4, "min_size": None,
            "max_size": None,
        })  # fmt: skip
        found[name] = predict(cfg, tmp_path)["images"]
    assert sum(len(r["detections"]) for r in found["ckpt"]) > 0
    for want, got in zip(found["ckpt"], found["onnx"], strict=True):
        assert [d["category_id"] for d in got["detections"]] == \
            [d["category_id"] for d in want["detections"]]  # fmt: skip
        for a, b in zip(want["detections"], got["detections"], strict=True):
            assert max(abs(u - v) for u, v in zip(a["box"], b["box"], strict=True)) <= 0.2
            assert abs(a["score"] - b["score"]) <= 2e-4


@pytest.mark.slow
def test_retina_eval_command_runs_the_onnx_model(tiny_onnx, tmp_path):
    proc = run_cli("retina.cli.eval", f"checkpoint={tiny_onnx}", f"hydra.run.dir={tmp_path}",
                   "eval.num_workers=0", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["checkpoint"] == str(tiny_onnx) and metrics["AP50"] > 0


def test_predict_with_a_foreign_onnx_file_is_one_line(tmp_path):
    from PIL import Image

    from retina.cli.predict import predict

    model = foreign_onnx(tmp_path / "foreign.onnx")
    (tmp_path / "images").mkdir()
    Image.new("RGB", (160, 160), (90, 90, 90)).save(tmp_path / "images/a.png")
    cfg = OmegaConf.create({
        "checkpoint": str(model), "input": str(tmp_path / "images"),
        "output": str(tmp_path / "out"), "score_thresh": 0.3, "device": "cpu",
        "batch_size": 1, "min_size": None, "max_size": None,
    })  # fmt: skip
    with pytest.raises(CheckpointError, match="not an ONNX model written by retina-export"):
        predict(cfg, tmp_path)
    assert not (tmp_path / "out").exists()

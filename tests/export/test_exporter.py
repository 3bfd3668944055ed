"""export_checkpoint: bad values and an export that cannot reproduce eager inference are one
line each and write nothing; the torch.export program matches eager inference (slow)."""

from __future__ import annotations

import json

import pytest
import torch

from retina.errors import CheckpointError, ConfigError, ExportError
from retina.export import exporter
from retina.export.exporter import export_checkpoint


@pytest.mark.parametrize(
    ("fmt", "name", "score_thresh", "match"),
    [
        ("tflite", "m.onnx", None, "format: must be one of onnx, torch_export"),
        ("onnx", "m.pt2", None, "out: .*format=onnx writes a .onnx file"),
        ("torch_export", "m.onnx", None, "out: .*writes a .pt2 file"),
        ("onnx", "m.onnx", 1.5, "score_thresh: must be null or in"),
    ],
)
def test_bad_values_are_refused_before_loading(tmp_path, fmt, name, score_thresh, match):
    with pytest.raises(ConfigError, match=match):
        export_checkpoint(str(tmp_path / "missing.pt"), fmt, tmp_path / name, score_thresh)
    assert list(tmp_path.iterdir()) == []


def test_unusable_checkpoints_are_one_line(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    for path in (garbage, foreign, tmp_path / "missing.pt"):
        with pytest.raises(CheckpointError, match=str(path)) as err:
            export_checkpoint(str(path), "onnx", tmp_path / "out.onnx")
        assert "\n" not in str(err.value)
    assert not (tmp_path / "out.onnx").exists()


def test_an_export_that_differs_from_eager_is_refused(tiny_checkpoint, tiny_onnx, tmp_path,
                                                      monkeypatch):  # fmt: skip
    # The graph of tiny_onnx has the checkpoint's score threshold (0.05) baked in; asking for
    # 0.3 while returning that graph gives an export whose detections eager inference does
    # not reproduce.
    monkeypatch.setattr(exporter, "trace_graph", lambda graph, example: None)
    monkeypatch.setattr(exporter, "_onnx_bytes", lambda program, meta: tiny_onnx.read_bytes())
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match="num_detections differs on image 0") as err:
        export_checkpoint(str(tiny_checkpoint), "onnx", out, score_thresh=0.3)
    assert "\n" not in str(err.value) and "sample batch" in str(err.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_torch_export_program_matches_eager(tiny_checkpoint, tmp_path):
    from retina.engine.inference import load_for_inference
    from retina.export.parity import first_difference, sample_images

    out = tmp_path / "tiny.pt2"
    metadata = export_checkpoint(str(tiny_checkpoint), "torch_export", out)
    assert json.loads((tmp_path / "tiny.pt2.json").read_text()) == metadata
    program = torch.export.load(str(out))
    model, state = load_for_inference(str(tiny_checkpoint))
    images = sample_images([(150, 230), (150, 230), (150, 230)], seed=5)
    batch = torch.stack(images)
    with torch.no_grad():
        eager = model(batch / 255.0)
    outputs = program.module()(batch)
    assert first_difference(eager, outputs, state["cat_ids"], (150, 230)) is None
    assert metadata["class_names"] == {"1": "circle", "2": "square", "3": "triangle"}

"""The exported ONNX graph against eager inference of the same trained tiny checkpoint, on the
shapes val images at sizes other than the training size, and on a caller-padded batch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torch.nn.functional as F

from retina.data import CocoDetection
from retina.engine.inference import load_for_inference
from retina.export.parity import first_difference


@pytest.fixture(scope="module")
def setup(tiny_checkpoint, tiny_onnx):
    model, state = load_for_inference(str(tiny_checkpoint))
    root = tiny_checkpoint.parent.parent / "shapes"
    val = CocoDetection(root / "annotations/instances_val.json", root / "val")
    session = onnxruntime.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    return model, state["cat_ids"], val, session


def resized(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A uint8 val image as float 0-255 pixels at ``size`` (whole pixel values)."""
    x = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)
    return x[0].round().clamp(0, 255)


def compare(model, cat_ids, session, batch: torch.Tensor) -> list[int]:
    """Assert parity on ``batch``; return the detections per image."""
    with torch.no_grad():
        eager = model(batch / 255.0)
    outputs = session.run(None, {"images": batch.numpy()})
    problem = first_difference(eager, outputs, cat_ids, tuple(batch.shape[-2:]))
    assert problem is None, problem
    return [len(e["scores"]) for e in eager]


@pytest.mark.parametrize("size", [(144, 208), (224, 176)])
def test_onnx_matches_eager_at_other_sizes(setup, size):
    model, cat_ids, val, session = setup
    batch = torch.stack([resized(val[i][0], size) for i in range(3)])
    counts = compare(model, cat_ids, session, batch)
    assert min(counts) > 0  # a trained model finds something: the comparison is not vacuous


def test_onnx_matches_eager_on_a_batch_of_four_sizes_padded_by_the_caller(setup):
    model, cat_ids, val, session = setup
    sizes = [(160, 160), (137, 201), (190, 150), (176, 230)]
    images = [resized(val[i + 3][0], s) for i, s in enumerate(sizes)]
    batch = torch.zeros((4, 3, 190, 230))
    for i, image in enumerate(images):
        batch[i, :, : image.shape[1], : image.shape[2]] = image
    assert min(compare(model, cat_ids, session, batch)) > 0


def test_onnx_rows_past_num_detections_are_zero_and_labels_are_category_ids(setup):
    model, cat_ids, val, session = setup
    blank = torch.full((3, 160, 176), 128.0)  # a grey picture: fewer than 100 detections
    batch = torch.stack([resized(val[0][0], (160, 176)), blank])
    compare(model, cat_ids, session, batch)
    boxes, scores, labels, num = session.run(None, {"images": batch.numpy()})
    assert boxes.dtype == np.float32 and labels.dtype == np.int64 and num.dtype == np.int64
    assert boxes.shape == (2, 100, 4) and scores.shape == labels.shape == (2, 100)
    n = int(num[1])
    assert n < 100 and not boxes[1, n:].any() and not scores[1, n:].any()
    assert not labels[1, n:].any()
    assert set(labels[0, : int(num[0])].tolist()) <= {1, 2, 3}  # category ids, not 0..K-1


def test_onnx_graph_uses_only_standard_ops_and_carries_metadata(tiny_onnx, tiny_checkpoint):
    proto = onnx.load(str(tiny_onnx))
    assert {node.domain for node in proto.graph.node} <= {"", "ai.onnx"}
    assert "NonMaxSuppression" in {node.op_type for node in proto.graph.node}
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["boxes", "scores", "labels", "num_detections"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_value == 3 and all(dims[i].dim_param for i in (0, 2, 3))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["class_names"] == '{"1": "circle", "2": "square", "3": "triangle"}'
    assert props["min_size"] == props["max_size"] == "160"
    assert str(tiny_checkpoint.resolve()) in props["retina.checkpoint"]
    assert props["retina.version"].strip('"')

"""Both spellings of the export's class-wise NMS keep exactly what eager inference keeps, and
ONNX's NonMaxSuppression (onnxruntime) agrees with them at the threshold edges."""

from __future__ import annotations

import onnxruntime
import pytest
import torch

from retina.export.nms import class_nms, class_nms_keep, class_nms_onnx
from retina.ops.boxes import offset_batched_nms


def random_candidates(seed: int, b: int = 3, c: int = 400, k: int = 4):
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand((b, c, 2), generator=gen) * 200
    wh = 5 + torch.rand((b, c, 2), generator=gen) * 60
    boxes = torch.cat([xy, xy + wh], dim=2)
    scores = torch.rand((b, c), generator=gen)
    labels = torch.randint(0, k, (b, c), generator=gen)
    return boxes, scores, labels, k


def eager_keep(boxes, scores, labels, k, iou, thresh):
    """The selection of RetinaNet.inference, as a (B, C) mask."""
    b, c = scores.shape
    img = torch.arange(b)[:, None].expand(b, c)
    cand = (scores > thresh).flatten().nonzero().squeeze(1)
    groups = (img * k + labels).flatten()[cand]
    keep = cand[offset_batched_nms(boxes.reshape(-1, 4)[cand], scores.flatten()[cand], groups, iou)]
    mask = torch.zeros(b * c, dtype=torch.bool)
    mask[keep] = True
    return mask.view(b, c)


@pytest.mark.parametrize("seed", [0, 1])
def test_both_spellings_keep_what_eager_inference_keeps(seed):
    boxes, scores, labels, k = random_candidates(seed)
    want = eager_keep(boxes, scores, labels, k, 0.5, 0.3)
    assert 0 < int(want.sum()) < int((scores > 0.3).sum())  # NMS removed some, kept some
    assert torch.equal(class_nms_keep(boxes, scores, labels, k, 0.5, 0.3), want)
    assert torch.equal(class_nms(boxes, scores, labels, k, 0.5, 0.3, 100), want)


class _NMS(torch.nn.Module):
    def forward(self, boxes, scores, labels):
        return class_nms(boxes, scores, labels, 2, 0.5, 0.25, 1000)


def test_onnx_translation_matches_at_the_iou_and_score_edges(tmp_path):
    # IoU exactly 0.5 (kept: suppression needs IoU > 0.5), a score equal to the threshold
    # (dropped: candidates need score > 0.25), another class overlapping fully (kept), and
    # a second image where the same boxes do suppress (IoU 0.6).
    boxes = torch.tensor([
        [[0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30], [0, 0, 10, 10]],
        [[0, 0, 10, 10], [0, 0, 10, 6], [20, 20, 30, 30], [40, 40, 50, 50]],
    ], dtype=torch.float32)  # fmt: skip
    scores = torch.tensor([[0.9, 0.8, 0.25, 0.7], [0.9, 0.8, 0.6, 0.26]])
    labels = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 1]])
    want = eager_keep(boxes, scores, labels, 2, 0.5, 0.25)
    assert want.tolist() == [[True, True, False, True], [True, False, True, True]]
    path = tmp_path / "nms.onnx"
    dim = torch.export.Dim("c", min=2)
    program = torch.onnx.export(
        _NMS().eval(), (boxes, scores, labels), dynamo=True, opset_version=18, verbose=False,
        dynamic_shapes={"boxes": {1: dim}, "scores": {1: dim}, "labels": {1: dim}},
        custom_translation_table={torch.ops.retina.class_nms.default: class_nms_onnx},
    )  # fmt: skip
    program.save(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = dict(zip([i.name for i in session.get_inputs()], (boxes, scores, labels), strict=True))
    (got,) = session.run(None, {name: t.numpy() for name, t in inputs.items()})
    assert got.tolist() == want.tolist()
    more = random_candidates(3, b=2, c=300, k=2)[:3]
    (got,) = session.run(None, {name: t.numpy() for name, t in zip(inputs, more, strict=True)})
    assert got.tolist() == eager_keep(*more, 2, 0.5, 0.25).tolist()

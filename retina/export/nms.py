"""Class-wise NMS of a padded candidate batch as a fixed-shape keep mask: the NMS step of the
exported graph.

Two spellings of one computation, both equal to :meth:`retina.modeling.RetinaNet.inference`'s
NMS (candidates above the score threshold, boxes of different images or classes never
suppress each other, IoU > threshold suppresses):

- :func:`class_nms_keep` traces under ``torch.export``: one ``torchvision.ops.nms`` call on
  float64 boxes shifted per (image, class), as eager inference does;
- the custom op ``retina::class_nms`` (:func:`class_nms`) is what the ONNX export records; its
  translation (:func:`class_nms_onnx`) is ONNX's own ``NonMaxSuppression`` with the images as
  its batch and the classes as its classes, so no shifted coordinates and no custom op reach
  the graph. Run eagerly, the op is eager inference's ``offset_batched_nms``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import nms

from retina.ops.boxes import offset_batched_nms

__all__ = ["class_nms", "class_nms_keep", "class_nms_onnx"]


def _groups(labels: Tensor, num_classes: int) -> Tensor:
    """``image * K + label`` for every candidate, flattened ``(B*C,)``."""
    image = torch.arange(labels.shape[0], device=labels.device)[:, None]
    return (image * num_classes + labels).flatten()


def class_nms_keep(
    boxes: Tensor, scores: Tensor, labels: Tensor, num_classes: int, iou_threshold: float,
    score_threshold: float,
) -> Tensor:  # fmt: skip
    """Keep mask of class-wise NMS within each image, in traceable tensor ops.

    Args:
        boxes ``(B, C, 4)``, scores ``(B, C)``, labels ``(B, C)`` int64 in ``0..K-1``.

    Returns:
        ``(B, C)`` bool: True for the candidates scoring above ``score_threshold`` that NMS
        keeps. The shift uses the span of all candidates (never empty), not only those above
        the threshold; in float64 that changes no IoU that matters.
    """
    flat = boxes.reshape(-1, 4).to(torch.float64)
    span = flat.max() - flat.min() + 1
    cand = (scores.flatten() > score_threshold).nonzero().squeeze(1)
    shifted = flat[cand] + (_groups(labels, num_classes)[cand].to(torch.float64) * span)[:, None]
    kept = cand[nms(shifted, scores.flatten()[cand].to(torch.float64), iou_threshold)]
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    return mask.index_fill(0, kept, True).view(scores.shape)


@torch.library.custom_op("retina::class_nms", mutates_args=())
def class_nms(
    boxes: Tensor, scores: Tensor, labels: Tensor, num_classes: int, iou_threshold: float,
    score_threshold: float, max_per_image: int,
) -> Tensor:  # fmt: skip
    """:func:`class_nms_keep` as one op for the ONNX exporter.

    ``max_per_image`` is the most boxes the caller keeps per image; ONNX gets it as
    ``max_output_boxes_per_class``, so its mask may lack a class's kept boxes past that many.
    Greedy NMS keeps boxes in score order, so the best ``max_per_image`` of an image are the
    same either way (the eager op returns them all)."""
    cand = (scores.flatten() > score_threshold).nonzero().squeeze(1)
    groups = _groups(labels, num_classes)[cand]
    flat_boxes, flat_scores = boxes.reshape(-1, 4)[cand], scores.flatten()[cand]
    kept = cand[offset_batched_nms(flat_boxes, flat_scores, groups, iou_threshold)]
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    return mask.index_fill(0, kept, True).view(scores.shape)


@class_nms.register_fake
def _class_nms_fake(boxes, scores, labels, num_classes, iou_threshold, score_threshold,
                    max_per_image):  # fmt: skip
    return torch.empty(scores.shape, dtype=torch.bool, device=scores.device)


def class_nms_onnx(
    boxes, scores, labels, num_classes: int, iou_threshold: float, score_threshold: float,
    max_per_image: int,
):  # fmt: skip
    """ONNX translation of ``retina::class_nms`` (onnxscript, traced at export).

    ``NonMaxSuppression`` takes boxes ``(B, C, 4)`` and per-class scores ``(B, K, C)``: a
    candidate's score sits in its own class's row, -1 elsewhere (below any threshold in
    [0, 1]). Its ``(M, 3)`` selection ``[image, class, candidate]`` is scattered into the
    ``(B, C)`` mask.
    """
    from onnxscript import opset18 as op

    classes = op.Range(
        op.Constant(value_int=0), op.Constant(value_int=num_classes), op.Constant(value_int=1)
    )
    in_class = op.Equal(op.Unsqueeze(labels, [1]), op.Reshape(classes, [1, -1, 1]))  # (B, K, C)
    per_class = op.Where(in_class, op.Unsqueeze(scores, [1]), op.Constant(value_float=-1.0))
    selected = op.NonMaxSuppression(
        boxes, per_class, op.Constant(value_ints=[max_per_image]),
        op.Constant(value_floats=[iou_threshold]), op.Constant(value_floats=[score_threshold]),
    )  # fmt: skip
    index = op.Gather(selected, op.Constant(value_ints=[0, 2]), axis=1)  # (M, 2)
    ones = op.Expand(op.Constant(value_float=1.0), op.Shape(selected, start=0, end=1))
    mask = op.ScatterND(op.ConstantOfShape(op.Shape(scores)), index, ones)
    return op.Greater(mask, op.Constant(value_float=0.5))

"""Pure box maths for batched detection: pairwise IoU over padded batches, GIoU loss,
per-image clipping and a single-call class/image-aware NMS.

Boxes are ``(x1, y1, x2, y2)`` in pixels throughout. torchvision's compiled ``nms`` is reused;
what lives here is the broadcasting around it that torchvision does image by image.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import nms

__all__ = [
    "box_area",
    "batched_pairwise_iou",
    "generalized_iou_loss",
    "clip_boxes",
    "offset_batched_nms",
]


def box_area(boxes: Tensor) -> Tensor:
    """Area of boxes ``(..., 4)`` -> ``(...)``; degenerate boxes give 0, never negative."""
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def batched_pairwise_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of every box in ``boxes1`` with every box in ``boxes2``, broadcast over a batch.

    Args:
        boxes1: ``(B, M, 4)`` (e.g. padded ground truth).
        boxes2: ``(A, 4)`` shared by all images (anchors) or ``(B, A, 4)``.

    Returns:
        ``(B, M, A)`` IoU in [0, 1]; pairs with zero union give 0 (not NaN).
    """
    if boxes2.dim() == 2:
        boxes2 = boxes2.unsqueeze(0)
    area1 = box_area(boxes1)  # (B, M)
    area2 = box_area(boxes2)  # (1|B, A)
    b1 = boxes1[:, :, None, :]  # (B, M, 1, 4)
    b2 = boxes2[:, None, :, :]  # (1|B, 1, A, 4)
    # width and height of the intersection, one (B, M, A) tensor each (no (B, M, A, 2) temps)
    iw = (torch.minimum(b1[..., 2], b2[..., 2]) - torch.maximum(b1[..., 0], b2[..., 0])).clamp_(0)
    ih = (torch.minimum(b1[..., 3], b2[..., 3]) - torch.maximum(b1[..., 1], b2[..., 1])).clamp_(0)
    inter = iw * ih
    del iw, ih
    union = (area1[:, :, None] + area2[:, None, :]) - inter
    return inter / union.clamp_(min=torch.finfo(union.dtype).tiny)


def generalized_iou_loss(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """Elementwise GIoU loss ``1 - GIoU`` of paired boxes ``(N, 4)`` -> ``(N,)``.

    Same formula and ``eps`` placement as ``torchvision.ops.generalized_box_iou_loss`` so that
    losses computed from torchvision-converted models agree.
    """
    x1, y1, x2, y2 = pred.unbind(dim=-1)
    x1g, y1g, x2g, y2g = target.unbind(dim=-1)
    xkis1 = torch.max(x1, x1g)
    ykis1 = torch.max(y1, y1g)
    xkis2 = torch.min(x2, x2g)
    ykis2 = torch.min(y2, y2g)
    intsct = torch.zeros_like(x1)
    mask = (ykis2 > ykis1) & (xkis2 > xkis1)
    intsct = torch.where(mask, (xkis2 - xkis1) * (ykis2 - ykis1), intsct)
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intsct
    iou = intsct / (union + eps)
    xc1 = torch.min(x1, x1g)
    yc1 = torch.min(y1, y1g)
    xc2 = torch.max(x2, x2g)
    yc2 = torch.max(y2, y2g)
    area_c = (xc2 - xc1) * (yc2 - yc1)
    giou = iou - ((area_c - union) / (area_c + eps))
    return 1 - giou


def clip_boxes(boxes: Tensor, sizes: Tensor) -> Tensor:
    """Clip boxes ``(B, N, 4)`` to per-image sizes ``(B, 2)`` given as ``(height, width)``."""
    h = sizes[:, 0].to(boxes.dtype)[:, None]
    w = sizes[:, 1].to(boxes.dtype)[:, None]
    zero = torch.zeros((), dtype=boxes.dtype, device=boxes.device)
    x1 = torch.minimum(torch.maximum(boxes[..., 0], zero), w)
    y1 = torch.minimum(torch.maximum(boxes[..., 1], zero), h)
    x2 = torch.minimum(torch.maximum(boxes[..., 2], zero), w)
    y2 = torch.minimum(torch.maximum(boxes[..., 3], zero), h)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def _offset_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """One ``nms`` call with every group shifted to its own region of the plane (float64)."""
    boxes64 = boxes.to(torch.float64)
    span = boxes64.max() - boxes64.min() + 1
    shifted = boxes64 + (groups.to(torch.float64) * span)[:, None]
    return nms(shifted, scores.to(torch.float64), iou_threshold)


def offset_batched_nms(
    boxes: Tensor,
    scores: Tensor,
    groups: Tensor,
    iou_threshold: float,
    max_chunk: int | None = None,
) -> Tensor:
    """NMS where boxes of different ``groups`` never suppress each other.

    Each group is shifted to its own region of the plane (the coordinate-offset trick of
    ``torchvision.ops.batched_nms``), in float64 so that large offsets (many images x
    classes) do not perturb the IoUs by float32 rounding. ``nms`` compares every kept box
    with every later box, overlapping or not, so one call over ``n`` boxes costs ``O(n^2)``
    (and on CUDA an ``n x n/64`` mask): above ``max_chunk`` boxes (default 512 on CPU, 4096
    on CUDA) the boxes are sorted by group and whole groups are packed into chunks of at
    most ``max_chunk`` boxes (a larger group forms its own chunk), one offset ``nms`` call per
    chunk. No Python loop over groups' boxes; the loop is over a few chunks.

    Args:
        boxes: ``(N, 4)``; scores: ``(N,)``; groups: ``(N,)`` int64 (e.g. ``image * K + label``).

    Returns:
        int64 indices of kept boxes, by decreasing score.
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    if max_chunk is None:
        max_chunk = 4096 if boxes.is_cuda else 512
    if n <= max_chunk:
        return _offset_nms(boxes, scores, groups, iou_threshold)
    order = torch.argsort(groups, stable=True)
    counts = torch.unique_consecutive(groups[order], return_counts=True)[1].tolist()
    bounds, start, size = [], 0, 0
    for c in counts:
        if size and size + c > max_chunk:
            bounds.append((start, start + size))
            start, size = start + size, 0
        size += c
    bounds.append((start, start + size))
    keep = torch.cat(
        [
            order[s + _offset_nms(boxes[order[s:e]], scores[order[s:e]], groups[order[s:e]],
                                  iou_threshold)]
            for s, e in bounds
        ]
    )  # fmt: skip
    return keep[torch.argsort(scores[keep], descending=True, stable=True)]

"""The exported graph: a trained :class:`~retina.modeling.RetinaNet` from raw pixels to
fixed-size detections (the contract in docs/deploy.md).

Input ``images`` float32 ``(N, 3, H, W)``, RGB 0-255; outputs ``boxes`` ``(N, D, 4)`` in input
pixels, ``scores`` ``(N, D)``, ``labels`` ``(N, D)`` int64 category ids, ``num_detections``
``(N,)`` int64; rows past ``num_detections`` are zero. Every step is the eager model's own
(normalisation buffers, backbone, FPN, head, :meth:`RetinaNet.candidates`, box coder), so
the graph computes :meth:`RetinaNet.forward` in eval mode on the same tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from retina.export.nms import class_nms, class_nms_keep
from retina.modeling.retinanet import RetinaNet

__all__ = ["DetectionGraph", "OUTPUT_NAMES", "INPUT_NAME"]

INPUT_NAME = "images"
OUTPUT_NAMES = ("boxes", "scores", "labels", "num_detections")


class DetectionGraph(nn.Module):
    """Export wrapper of a RetinaNet in eval mode.

    Args:
        model: the trained detector (its inference settings are baked in).
        cat_ids: the dataset's category id of each contiguous label ``0..K-1``.
        onnx_nms: record NMS as the ``retina::class_nms`` op (translated to ONNX's
            ``NonMaxSuppression``) instead of tracing torchvision's ``nms``.
    """

    def __init__(self, model: RetinaNet, cat_ids: Sequence[int], onnx_nms: bool = False) -> None:
        super().__init__()
        if len(cat_ids) != model.num_classes:
            raise ValueError(f"{len(cat_ids)} category ids for {model.num_classes} classes")
        self.model = model.eval()
        self.onnx_nms = onnx_nms
        self.register_buffer("cat_ids", torch.tensor([int(c) for c in cat_ids]), persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``images`` ``(N, 3, H, W)`` float 0-255 -> boxes, scores, labels, num_detections."""
        m = self.model
        b, _, h, w = images.shape
        x = m._normalize(images / 255.0)  # the eager model's uint8 path: x / 255, then mean/std
        d = m.size_divisibility
        # ceil-division form: the padded sizes are d * k symbolically, which keeps the traced
        # shapes of every level simple (the modulo form makes tracing minutes slower)
        x = F.pad(x, (0, (w + d - 1) // d * d - w, 0, (h + d - 1) // d * d - h))
        feats = m.fpn(m.backbone(x))
        logits, deltas = m.head(feats)
        grids = [(f.shape[-2], f.shape[-1]) for f in feats]
        anchors = m.anchor_generator.grid_anchors(grids, x.device)
        counts = m.anchor_generator.num_anchors_per_level(grids)
        sizes = torch.stack([images.new_full((b,), h), images.new_full((b,), w)], dim=1)
        scores, labels, boxes = m.candidates(logits, deltas, anchors, counts, sizes)
        if self.onnx_nms:
            keep = class_nms(
                boxes, scores, labels, m.num_classes, m.nms_thresh, m.score_thresh,
                m.detections_per_img,
            )  # fmt: skip
        else:
            keep = class_nms_keep(boxes, scores, labels, m.num_classes, m.nms_thresh,
                                  m.score_thresh)  # fmt: skip
        return self._best(keep, boxes, scores, labels)

    def _best(
        self, keep: Tensor, boxes: Tensor, scores: Tensor, labels: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The best ``detections_per_img`` kept candidates per image, zero-padded.

        A padding of D never-kept columns makes top-k valid however few candidates there are.
        """
        b = scores.shape[0]
        num = self.model.detections_per_img
        masked = torch.cat([torch.where(keep, scores, -1.0), scores.new_full((b, num), -1.0)], 1)
        top, index = masked.topk(num, dim=1)  # (B, D), decreasing score
        valid = top > -0.5  # kept scores are > score_thresh >= 0
        boxes = torch.cat([boxes, boxes.new_zeros((b, num, 4))], 1)
        boxes = boxes.gather(1, index[..., None].expand(-1, -1, 4))
        labels = torch.cat([labels, labels.new_zeros((b, num))], 1).gather(1, index)
        return (
            torch.where(valid[..., None], boxes, 0.0),
            torch.where(valid, top, 0.0),
            torch.where(valid, self.cat_ids[labels], 0),
            valid.sum(dim=1),
        )

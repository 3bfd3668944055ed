"""(dx, dy, dw, dh) box encoding relative to anchors (R-CNN parameterisation)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from retina.utils.checks import check_number

__all__ = ["BoxCoder", "DEFAULT_SCALE_CLAMP"]

DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encode boxes as ``(wx*dx, wy*dy, ww*dw, wh*dh)`` w.r.t. anchors and decode back.

    ``dx = (cx_gt - cx_a) / w_a``, ``dw = log(w_gt / w_a)``; on decoding ``dw``/``dh`` are
    clamped at ``scale_clamp`` = log(1000/16) (as torchvision and detectron2) so ``exp`` cannot
    overflow. Decoding always runs in float32 (or wider), also under AMP: fp16 deltas times
    512-pixel anchors lose whole pixels. Arithmetic order follows torchvision's ``BoxCoder`` so
    converted models decode bit-for-bit alike.

    Args:
        weights: ``(wx, wy, ww, wh)``; ``(1, 1, 1, 1)`` for RetinaNet in all three references.
    """

    def __init__(
        self,
        weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        scale_clamp: float = DEFAULT_SCALE_CLAMP,
    ) -> None:
        if len(weights) != 4:
            raise ValueError(f"box_coder_weights={tuple(weights)}: expected 4 numbers")
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = check_number("scale_clamp", scale_clamp, 0.0, low_open=True)

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """Targets ``(..., 4)`` for ``boxes`` ``(..., 4)`` relative to ``anchors`` ``(..., 4)``."""
        boxes = boxes.float()
        anchors = anchors.float()
        wx, wy, ww, wh = self.weights
        aw = anchors[..., 2] - anchors[..., 0]
        ah = anchors[..., 3] - anchors[..., 1]
        ax = anchors[..., 0] + 0.5 * aw
        ay = anchors[..., 1] + 0.5 * ah
        gw = boxes[..., 2] - boxes[..., 0]
        gh = boxes[..., 3] - boxes[..., 1]
        gx = boxes[..., 0] + 0.5 * gw
        gy = boxes[..., 1] + 0.5 * gh
        dx = wx * (gx - ax) / aw
        dy = wy * (gy - ay) / ah
        dw = ww * torch.log(gw / aw)
        dh = wh * torch.log(gh / ah)
        return torch.stack((dx, dy, dw, dh), dim=-1)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes ``(..., 4)`` float32 from ``deltas`` ``(..., 4)`` and ``anchors`` ``(..., 4)``."""
        dtype = torch.promote_types(deltas.dtype, torch.float32)
        deltas = deltas.to(dtype)
        anchors = anchors.to(dtype)
        wx, wy, ww, wh = self.weights
        widths = anchors[..., 2] - anchors[..., 0]
        heights = anchors[..., 3] - anchors[..., 1]
        ctr_x = anchors[..., 0] + 0.5 * widths
        ctr_y = anchors[..., 1] + 0.5 * heights
        dx = deltas[..., 0] / wx
        dy = deltas[..., 1] / wy
        dw = torch.clamp(deltas[..., 2] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[..., 3] / wh, max=self.scale_clamp)
        pred_ctr_x = dx * widths + ctr_x
        pred_ctr_y = dy * heights + ctr_y
        half_w = 0.5 * (torch.exp(dw) * widths)
        half_h = 0.5 * (torch.exp(dh) * heights)
        return torch.stack(
            (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h),
            dim=-1,
        )

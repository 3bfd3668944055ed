"""RetinaNet classification and box subnets, shared across pyramid levels."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from retina.utils.checks import check_int, check_number

__all__ = ["RetinaNetHead", "prior_bias"]


def prior_bias(prior_prob: float | None) -> float:
    """Bias ``-log((1 - pi) / pi)`` making every initial score ``pi``; ``None`` gives 0."""
    if prior_prob is None:
        return 0.0
    check_number("prior_prob", prior_prob, 0.0, 1.0, low_open=True, high_open=True)
    return -math.log((1.0 - prior_prob) / prior_prob)


def _subnet(channels: int, num_convs: int, norm: str | None) -> nn.ModuleList:
    """``num_convs`` x (3x3 conv, [GroupNorm(32)], ReLU); conv bias only without a norm,
    so parameter names match torchvision's ``Conv2dNormActivation`` blocks."""
    blocks = []
    for _ in range(num_convs):
        layers: list[nn.Module] = [nn.Conv2d(channels, channels, 3, padding=1, bias=norm is None)]
        if norm == "gn":
            layers.append(nn.GroupNorm(min(32, channels), channels))
        elif norm is not None:
            raise ValueError(f"head_norm={norm!r}: expected None or 'gn'")
        layers.append(nn.ReLU(inplace=True))
        blocks.append(nn.Sequential(*layers))
    return nn.ModuleList(blocks)


class RetinaNetHead(nn.Module):
    """Class subnet (``K*A`` outputs per location) and class-agnostic box subnet (``4*A``).

    All convs are N(0, 0.01^2) with zero bias, except the last class conv whose bias is
    :func:`prior_bias` (``prior_prob`` pi = 0.01 in the paper) so that the focal loss is not
    swamped by the ~100k easy negatives at the first iterations.

    Args:
        in_channels: pyramid width. num_anchors: ``A``. num_classes: ``K`` (no background).
        num_convs: depth of each subnet (4 in the paper). norm: ``None`` or ``"gn"``
            (torchvision v2). prior_prob: pi, or ``None`` for bias 0 (Table-1 ablation).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        num_convs: int = 4,
        norm: str | None = None,
        prior_prob: float | None = 0.01,
    ) -> None:
        super().__init__()
        check_int("num_convs", num_convs, minimum=0)
        prior_bias(prior_prob)  # checks prior_prob before anything is built
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        self.cls_subnet = _subnet(in_channels, num_convs, norm)
        self.bbox_subnet = _subnet(in_channels, num_convs, norm)
        self.cls_score = nn.Conv2d(in_channels, num_anchors * num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_score.bias, prior_bias(prior_prob))

    @staticmethod
    def _flatten(x: Tensor, width: int) -> Tensor:
        """``(B, A*width, H, W)`` -> ``(B, H*W*A, width)`` (anchor order of the generator)."""
        b, _, h, w = x.shape
        return x.view(b, -1, width, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, width)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """``features``: ``[P3..P7]`` each ``(B, C, H_l, W_l)``.

        Returns:
            cls_logits ``(B, sum_l H_l*W_l*A, K)`` and box_deltas ``(B, sum_l H_l*W_l*A, 4)``.
        """
        logits, deltas = [], []
        for f in features:
            c = f
            for block in self.cls_subnet:
                c = block(c)
            r = f
            for block in self.bbox_subnet:
                r = block(r)
            logits.append(self._flatten(self.cls_score(c), self.num_classes))
            deltas.append(self._flatten(self.bbox_pred(r), 4))
        return torch.cat(logits, dim=1), torch.cat(deltas, dim=1)

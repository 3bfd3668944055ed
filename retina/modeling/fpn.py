"""Feature pyramid P3-P7 on top of C3-C5 (Lin et al. 2017, RetinaNet variant)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from retina.utils.checks import check_int

__all__ = ["FPN"]


class FPN(nn.Module):
    """1x1 laterals + nearest-neighbour top-down path on C3-C5, 3x3 output convs, then
    P6 = 3x3 stride-2 conv on C5 or P5 and P7 = 3x3 stride-2 conv on ReLU(P6).

    Args:
        in_channels: channels of ``[C3, C4, C5]``.
        out_channels: pyramid width (256 in the paper).
        p6_from: ``"c5"`` (the paper, detectron2, torchvision v2) or ``"p5"`` (torchvision v1).

    Initialisation is Kaiming-uniform with ``a=1`` and zero bias, as detectron2's
    ``c2_xavier_fill`` and torchvision's FPN/``LastLevelP6P7``.
    """

    def __init__(self, in_channels: list[int], out_channels: int = 256, p6_from: str = "c5"):
        super().__init__()
        check_int("out_channels", out_channels)
        if p6_from not in ("c5", "p5"):
            raise ValueError(f"p6_from={p6_from!r}: expected 'c5' or 'p5'")
        self.p6_from = p6_from
        self.out_channels = out_channels
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels
        )
        p6_in = in_channels[-1] if p6_from == "c5" else out_channels
        self.p6 = nn.Conv2d(p6_in, out_channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """``[C3, C4, C5]`` -> ``[P3, P4, P5, P6, P7]``, each ``(B, out_channels, H/s, W/s)``,
        s = 8, 16, 32, 64, 128."""
        inner = self.lateral_convs[-1](feats[-1])
        outs = [self.output_convs[-1](inner)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.lateral_convs[i](feats[i])
            inner = lateral + F.interpolate(inner, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.output_convs[i](inner))
        p6 = self.p6(feats[-1] if self.p6_from == "c5" else outs[-1])
        p7 = self.p7(F.relu(p6))
        return outs + [p6, p7]

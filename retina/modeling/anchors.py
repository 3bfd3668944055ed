"""Anchor boxes for P3-P7, cached per feature-map shapes, device and dtype."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from retina.utils.checks import check_int, check_positive_list

__all__ = ["AnchorGenerator"]


class AnchorGenerator(nn.Module):
    """Per level ``l``: sizes ``base_l * 2^(i/num_scales)`` for ``i < num_scales`` (the paper's
    Table 1c), times ``aspect_ratios`` (height / width), centred on a grid of stride ``s_l``.

    Anchor order inside a cell is ratio-major, scale-minor (torchvision's order, so converted
    torchvision heads line up); cells are row-major over ``(H_l, W_l)``; levels are
    concatenated P3 first. Total: ``sum_l H_l * W_l * A`` anchors, ``A = num_scales *
    len(aspect_ratios)``.

    Args:
        sizes: base size per level (32..512 for P3..P7, i.e. areas 32^2..512^2).
        strides: stride per level (8..128).
        num_scales: scales per octave (3 in the paper).
        aspect_ratios: ``(0.5, 1.0, 2.0)`` in the paper.
        offset: anchor centre at ``(offset + j) * stride``. 0.0 matches torchvision and
            detectron2 (grid corner); 0.5 centres anchors on the cell.
        torchvision_compat: reproduce torchvision exactly: sizes truncated with ``int()``
            (``(32, 40, 50)`` instead of ``(32, 40.3, 50.8)``) and cell anchors rounded to
            integers. Off by default (the paper's float sizes, as detectron2).
    """

    def __init__(
        self,
        *,
        sizes: Sequence[float] = (32, 64, 128, 256, 512),
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        num_scales: int = 3,
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        offset: float = 0.0,
        torchvision_compat: bool = False,
    ) -> None:
        super().__init__()
        check_positive_list("sizes", sizes)
        if len(sizes) != len(strides):
            raise ValueError(f"sizes={list(sizes)}: expected one size per level (strides "
                             f"{tuple(strides)})")
        check_int("num_scales", num_scales)
        check_positive_list("aspect_ratios", aspect_ratios)
        self.strides = [int(s) for s in strides]
        self.offset = float(offset)
        self.num_anchors = num_scales * len(aspect_ratios)
        self.cell_anchors = [
            self._cell(size, num_scales, aspect_ratios, torchvision_compat) for size in sizes
        ]
        self._cache: dict[tuple, tuple[Tensor, list[int]]] = {}

    @staticmethod
    def _cell(size: float, num_scales: int, ratios: Sequence[float], tv: bool) -> Tensor:
        """Zero-centred ``(A, 4)`` anchors for one level, float64 for exactness."""
        scales = [size * 2 ** (i / num_scales) for i in range(num_scales)]
        if tv:
            scales = [float(int(s)) for s in scales]
        scales_t = torch.tensor(scales, dtype=torch.float64)
        if tv:  # torchvision builds the cell in float32, then rounds
            scales_t = scales_t.float()
            h_ratios = torch.sqrt(torch.tensor(list(ratios), dtype=torch.float32))
        else:
            h_ratios = torch.tensor([math.sqrt(r) for r in ratios], dtype=torch.float64)
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * scales_t[None, :]).reshape(-1)
        hs = (h_ratios[:, None] * scales_t[None, :]).reshape(-1)
        cell = torch.stack([-ws, -hs, ws, hs], dim=1) / 2
        return (cell.round() if tv else cell).to(torch.float64)

    def num_anchors_per_level(self, grid_sizes: Sequence[tuple[int, int]]) -> list[int]:
        """Anchors per level for feature maps of the given ``(H_l, W_l)``."""
        return [h * w * self.num_anchors for h, w in grid_sizes]

    def grid_anchors(self, grid_sizes: Sequence[tuple[int, int]], device: torch.device) -> Tensor:
        """Anchors ``(sum_l H_l*W_l*A, 4)`` float32, built without the cache (the sizes may be
        symbolic, as when :mod:`retina.export` traces the model)."""
        levels = []
        for (h, w), stride, cell in zip(grid_sizes, self.strides, self.cell_anchors, strict=True):
            xs = (torch.arange(w, dtype=torch.float64) + self.offset) * stride
            ys = (torch.arange(h, dtype=torch.float64) + self.offset) * stride
            sy, sx = torch.meshgrid(ys, xs, indexing="ij")
            shifts = torch.stack([sx, sy, sx, sy], dim=-1).reshape(-1, 1, 4)
            levels.append((shifts + cell[None]).reshape(-1, 4))
        return torch.cat(levels).to(device=device, dtype=torch.float32)

    def forward(self, grid_sizes: Sequence[tuple[int, int]], device: torch.device) -> Tensor:
        """Anchors ``(sum_l H_l*W_l*A, 4)`` float32 for all levels, shared by all images.

        Cached on ``(grid_sizes, device)``: built once per input shape, never per step.
        """
        key = (tuple(tuple(int(v) for v in g) for g in grid_sizes), str(device))
        hit = self._cache.get(key)
        if hit is not None:
            return hit[0]
        if len(grid_sizes) != len(self.cell_anchors):
            raise ValueError(
                f"got {len(grid_sizes)} feature maps, anchors are defined for "
                f"{len(self.cell_anchors)} levels"
            )
        anchors = self.grid_anchors(key[0], device)
        if len(self._cache) > 64:  # many distinct shapes (eval on raw sizes): bound memory
            self._cache.clear()
        self._cache[key] = (anchors, self.num_anchors_per_level(key[0]))
        return anchors

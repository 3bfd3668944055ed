"""Batched IoU matcher: foreground / background / ignored anchors for a padded batch."""

from __future__ import annotations

import torch
from torch import Tensor

from retina.utils.checks import check_number

__all__ = ["Matcher", "BACKGROUND", "IGNORE"]

BACKGROUND = -1
IGNORE = -2


class Matcher:
    """Assign each anchor a ground-truth index, ``BACKGROUND`` (-1) or ``IGNORE`` (-2).

    IoU >= ``fg_iou_thresh`` -> best box; < ``bg_iou_thresh`` -> background; in between ->
    ignored (the paper, torchvision and detectron2 all use 0.5 / 0.4).

    ``allow_low_quality_matches``: each ground truth also claims the anchors of its highest
    IoU (ties included), each such anchor taking its own best box (torchvision/detectron2
    semantics). Unlike them, a box whose best IoU is 0 claims nothing (otherwise every anchor
    with IoU 0 would become foreground).

    Crowd boxes never produce foreground; an anchor whose best overlap is a crowd box with
    IoU >= ``bg_iou_thresh`` is ignored (neither a clean negative nor a positive).

    Batched over images with different numbers of boxes (zero included): padded entries are
    marked invalid and never win; no Python loop over images or anchors.
    """

    def __init__(
        self,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.4,
        allow_low_quality_matches: bool = True,
    ) -> None:
        check_number("fg_iou_thresh", fg_iou_thresh, 0.0, 1.0)
        check_number("bg_iou_thresh", bg_iou_thresh, 0.0, fg_iou_thresh)  # <= fg_iou_thresh
        self.fg_iou_thresh = fg_iou_thresh
        self.bg_iou_thresh = bg_iou_thresh
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, iou: Tensor, valid: Tensor, crowd: Tensor | None = None) -> Tensor:
        """Match a batch.

        Args:
            iou: ``(B, M, A)`` IoU of (padded) boxes with anchors.
            valid: ``(B, M)`` bool, False for padding.
            crowd: ``(B, M)`` bool, True for crowd boxes (must also be valid), or None
                when the batch has no crowd boxes.

        Returns:
            ``(B, A)`` int64: box index in ``0..M-1`` for foreground, else -1 / -2.
        """
        b, m, a = iou.shape
        if m == 0:
            return torch.full((b, a), BACKGROUND, dtype=torch.int64, device=iou.device)
        normal = valid if crowd is None else valid & ~crowd
        # -1 for padding/crowd, so they never win against a real box with IoU 0
        iou_normal = iou.masked_fill(~normal[:, :, None], -1.0)
        best_iou, best = iou_normal.max(dim=1)  # (B, A)
        matches = torch.where(
            best_iou >= self.fg_iou_thresh,
            best,
            torch.where(best_iou < self.bg_iou_thresh, BACKGROUND, IGNORE),
        )
        if self.allow_low_quality_matches:
            best_per_gt = iou_normal.amax(dim=2, keepdim=True)  # (B, M, 1)
            best_per_gt.masked_fill_(best_per_gt <= 0, float("inf"))  # claims nothing
            claimed = (iou_normal == best_per_gt).any(dim=1)  # (B, A)
            matches = torch.where(claimed, best, matches)
        if crowd is not None:
            crowd_iou = iou.masked_fill(~(crowd & valid)[:, :, None], -1.0).max(dim=1).values
            ignore = (crowd_iou >= self.bg_iou_thresh) & (crowd_iou > best_iou)
            matches = torch.where(ignore, IGNORE, matches)
        return matches

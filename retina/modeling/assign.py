"""Anchor assignment: every anchor of a batch gets a class, background or ignored.

The one implementation of RetinaNet's training assignment. The loss
(:meth:`retina.modeling.retinanet.RetinaNet.losses`), ``retina-stats``
(:mod:`retina.analysis.imbalance`) and Figure 4 (:mod:`retina.analysis.loss_cdf`) all go
through :func:`assign_anchors` (the latter two via :meth:`RetinaNet.assign`), so they cannot
drift apart when the matcher changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from retina.modeling.matcher import IGNORE, Matcher
from retina.ops.boxes import batched_pairwise_iou

__all__ = ["Assignment", "assign_anchors", "pad_targets"]


@dataclass(frozen=True)
class Assignment:
    """The assignment of R anchors in each of B images.

    Attributes:
        labels: ``(B, R)`` int64: the class (``>= 0``) of a foreground anchor,
            ``BACKGROUND`` (-1) or ``IGNORE`` (-2).
        matches: ``(B, R)`` int64: the index of the matched box in the image's target
            (ordinary boxes first, then crowd boxes) for foreground anchors, else -1 / -2.
        matched_boxes: ``(B, R, 4)`` float32 ``(x1, y1, x2, y2)``: each foreground anchor's
            matched box; zeros elsewhere.
    """

    labels: Tensor
    matches: Tensor
    matched_boxes: Tensor

    @property
    def foreground(self) -> Tensor:
        """``(B, R)`` bool: anchors matched to an object."""
        return self.labels >= 0

    @property
    def ignore(self) -> Tensor:
        """``(B, R)`` bool: anchors that count neither as foreground nor as background."""
        return self.labels == IGNORE


def pad_targets(
    targets: list[dict[str, Tensor]], num_classes: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Padded ``boxes (B, M, 4)``, ``labels (B, M)``, ``valid (B, M)``, ``crowd (B, M)|None``;
    crowd boxes are appended after each image's ordinary boxes (label -1).

    Raises:
        ValueError: naming ``targets[i]`` (and its ``image_id`` when it has one) for a
            box/label count mismatch, a degenerate or non-finite box, or a label outside
            ``0..num_classes-1`` (-1 included: only ``crowd_boxes`` are ignore regions).
    """
    boxes, labels, crowd = [], [], []
    num_crowd = 0
    for i, t in enumerate(targets):
        b = t["boxes"].to(device=device, dtype=torch.float32).reshape(-1, 4)
        lab = t["labels"].to(device=device, dtype=torch.int64).reshape(-1)
        if lab.numel() != b.shape[0]:
            raise ValueError(f"targets[{i}]: {b.shape[0]} boxes but {lab.numel()} labels")
        c = t.get("crowd_boxes")
        c = b.new_zeros((0, 4)) if c is None else c.to(device, torch.float32).reshape(-1, 4)
        num_crowd += c.shape[0]
        boxes.append(torch.cat([b, c]))
        labels.append(torch.cat([lab, lab.new_full((c.shape[0],), -1)]))
        crowd.append(torch.cat([torch.zeros_like(lab, dtype=torch.bool),
                                torch.ones(c.shape[0], dtype=torch.bool, device=device)]))
    allb = torch.cat(boxes)
    alll = torch.cat(labels)
    bad = (allb[:, 2:] <= allb[:, :2]).any(dim=1) | ~torch.isfinite(allb).all(dim=1)
    # Only crowd boxes (appended above with label -1) are ignore regions; an ordinary box
    # labelled -1 would turn its foreground anchors into background.
    bad |= ((alll >= num_classes) | (alll < 0)) & ~torch.cat(crowd)
    if allb.numel() and bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        i = int((torch.tensor([len(b) for b in boxes]).cumsum(0) <= k).sum())
        image = f"image {targets[i]['image_id']}: " if "image_id" in targets[i] else ""
        raise ValueError(
            f"{image}targets[{i}]: invalid box {allb[k].tolist()} with label {int(alll[k])} "
            f"(need x2 > x1, y2 > y1, finite, label in 0..{num_classes - 1}; only "
            "crowd_boxes are ignored)"
        )
    if allb.shape[0] == 0:  # no boxes at all: one invalid column keeps shapes non-empty
        boxes = [b.new_zeros((1, 4)) for b in boxes]
        labels = [lab.new_full((1,), -1) for lab in labels]
        crowd = [torch.zeros(1, dtype=torch.bool, device=device) for _ in crowd]
        valid = [torch.zeros_like(c) for c in crowd]
    else:
        valid = [torch.ones_like(c) for c in crowd]
    return (
        pad_sequence(boxes, batch_first=True),
        pad_sequence(labels, batch_first=True, padding_value=-1),
        pad_sequence(valid, batch_first=True),
        pad_sequence(crowd, batch_first=True) if num_crowd else None,
    )


@torch.no_grad()
def assign_anchors(
    anchors: Tensor, targets: list[dict[str, Tensor]], matcher: Matcher, num_classes: int
) -> Assignment:
    """Match ``anchors (R, 4)`` to each image's ``boxes``/``labels`` (and ``crowd_boxes``,
    which never become foreground) with ``matcher``; batched, no loop over images."""
    gt, gt_labels, valid, crowd = pad_targets(targets, num_classes, anchors.device)
    iou = batched_pairwise_iou(gt, anchors)  # (B, M, R)
    matches = matcher(iou, valid, crowd)  # (B, R)
    del iou
    fg = matches >= 0
    idx = matches.clamp(min=0)
    labels = torch.where(fg, gt_labels.gather(1, idx), matches)
    boxes = gt.gather(1, idx[..., None].expand(-1, -1, 4))
    boxes = boxes.masked_fill(~fg[..., None], 0.0)
    return Assignment(labels=labels, matches=matches, matched_boxes=boxes)


"""Exported detections against eager ones: the tolerances of docs/deploy.md, and the first
difference in words."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["SCORE_ATOL", "BOX_RTOL", "first_difference", "sample_images", "spread_scores"]

SCORE_ATOL = 1e-4
BOX_RTOL = 1e-3  # of the image's longer side


def first_difference(
    eager: Sequence[dict[str, torch.Tensor]],
    outputs: Sequence[np.ndarray | torch.Tensor],
    cat_ids: Sequence[int],
    image_size: tuple[int, int],
) -> str | None:
    """Where the exported outputs stop matching eager inference, or None when they match:
    per image the same count, and each eager detection paired with an exported one of the
    same label, score within ``SCORE_ATOL`` and box corners within ``BOX_RTOL`` of the image.

    Args:
        eager: ``RetinaNet`` eval output per image (contiguous labels).
        outputs: ``(boxes (N, D, 4), scores (N, D), labels (N, D), num_detections (N,))``.
        cat_ids: category id of each contiguous label.
        image_size: ``(H, W)`` of the input batch (box tolerance = ``BOX_RTOL * max(H, W)``).

    Returns:
        one line naming the output and image that differ, e.g. ``"scores differ on image 0
        (max |difference| 0.003 > 0.0001)"``.
    """
    boxes, scores, labels, num = (np.asarray(torch.as_tensor(o).detach().cpu()) for o in outputs)
    if num.shape != (len(eager),):
        return f"num_detections has shape {num.shape}, expected ({len(eager)},)"
    box_tol = BOX_RTOL * max(image_size)
    ids = np.asarray([int(c) for c in cat_ids], dtype=np.int64)
    for i, det in enumerate(eager):
        n = int(num[i])
        want = {key: det[key].detach().cpu().numpy() for key in ("boxes", "scores", "labels")}
        if n != len(want["scores"]):
            count = len(want["scores"])
            return f"num_detections differs on image {i} (eager {count}, exported {n})"
        problem = _unmatched(i, want, boxes[i, :n], scores[i, :n], labels[i, :n], ids, box_tol)
        if problem is not None:
            return problem
        padding = (boxes[i, n:], scores[i, n:], labels[i, n:])
        if any(np.any(p != 0) for p in padding):
            return f"rows past num_detections are not zero on image {i}"
    return None


def _unmatched(i: int, want: dict, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
               ids: np.ndarray, box_tol: float) -> str | None:  # fmt: skip
    """Pair each eager detection with an unused exported one of the same label within the
    tolerances. Rows are matched, not compared in order: two detections whose scores differ
    by less than the runtimes' rounding may come out in either order."""
    used = np.zeros(len(scores), dtype=bool)
    for r in range(len(want["scores"])):
        label = ids[want["labels"][r]]
        same = ~used & (labels == label)
        if not same.any():
            return f"labels differ on image {i} (eager detection {r} has label {label}, " \
                   "no exported one left with it)"  # fmt: skip
        score_gap = np.abs(scores - want["scores"][r])
        box_gap = np.abs(boxes - want["boxes"][r]).max(axis=1)
        cost = np.where(same, np.maximum(score_gap / SCORE_ATOL, box_gap / box_tol), np.inf)
        j = int(np.argmin(cost))
        if not cost[j] <= 1:
            if not score_gap[same].min() <= SCORE_ATOL:
                gap = float(score_gap[same].min())
                return f"scores differ on image {i} (detection {r}: |difference| {gap:.3g} > " \
                       f"{SCORE_ATOL:.3g})"  # fmt: skip
            gap = float(box_gap[same][score_gap[same] <= SCORE_ATOL].min())
            return f"boxes differ on image {i} (detection {r}: max |difference| {gap:.3g} > " \
                   f"{box_tol:.3g})"  # fmt: skip
        used[j] = True
    return None


def sample_images(sizes: Sequence[tuple[int, int]], seed: int = 0) -> list[torch.Tensor]:
    """Deterministic test pictures ``(3, H, W)`` float32 0-255: coloured rectangles on a grey,
    noisy background, so that a trained detector finds something."""
    gen = torch.Generator().manual_seed(seed)
    images = []
    for h, w in sizes:
        image = 100 + 30 * torch.rand((3, h, w), generator=gen)
        for _ in range(6):
            y0, x0 = (int(torch.randint(0, max(1, v - 16), (1,), generator=gen)) for v in (h, w))
            bh, bw = (int(torch.randint(12, max(13, v // 3), (1,), generator=gen)) for v in (h, w))
            colour = torch.randint(0, 256, (3, 1, 1), generator=gen).float()
            image[:, y0 : y0 + bh, x0 : x0 + bw] = colour
        images.append(image.round())
    return images


@torch.no_grad()
def spread_scores(model: torch.nn.Module, batch: torch.Tensor, logit_std: float = 1.0,
                  bias: float = -3.0, seed: int = 0) -> torch.nn.Module:  # fmt: skip
    """Re-draw the classification layer of a random-weight RetinaNet so that its scores spread.

    A random head gives logits within a hair of its prior bias: near-ties everywhere, whose
    order no two runtimes agree on. Here the layer's weights are redrawn and scaled so that
    on ``batch`` (``(N, 3, H, W)`` 0-255) the logits have ``logit_std`` around ``bias``:
    distinct scores, thousands above a 0.05 threshold, none saturated.
    """
    layer = model.head.cls_score
    gen = torch.Generator().manual_seed(seed)
    layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen))
    layer.bias.zero_()
    x, _ = model.preprocess(batch / 255.0)
    logits, _ = model.head(model.fpn(model.backbone(x)))
    layer.weight.mul_(logit_std / logits.std())
    layer.bias.fill_(bias)
    return model.eval()

"""Exported detections against eager ones: the tolerances of docs/deploy.md, and the first
difference in words."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["SCORE_ATOL", "BOX_RTOL", "first_difference", "sample_images"]

SCORE_ATOL = 1e-4
BOX_RTOL = 1e-3  # of the image's longer side


def first_difference(
    eager: Sequence[dict[str, torch.Tensor]],
    outputs: Sequence[np.ndarray | torch.Tensor],
    cat_ids: Sequence[int],
    image_size: tuple[int, int],
) -> str | None:
    """Where the exported outputs stop matching eager inference, or None when they match.

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
        if not np.array_equal(labels[i, :n], ids[want["labels"]]):
            return f"labels differ on image {i} (eager {ids[want['labels']][:5].tolist()}..., " \
                   f"exported {labels[i, :n][:5].tolist()}...)"  # fmt: skip
        for key, got, tol in (("scores", scores, SCORE_ATOL), ("boxes", boxes, box_tol)):
            gap = float(np.abs(got[i, :n] - want[key]).max()) if n else 0.0
            if not gap <= tol:
                return f"{key} differ on image {i} (max |difference| {gap:.3g} > {tol:.3g})"
        padding = (boxes[i, n:], scores[i, n:], labels[i, n:])
        if any(np.any(p != 0) for p in padding):
            return f"rows past num_detections are not zero on image {i}"
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

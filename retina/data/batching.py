"""What training batches are made of: :func:`collate_detection` (lists of images and
targets) and :func:`aspect_ratio_group_ids` (the groups of aspect-ratio grouping).

The batches themselves (order fixed by the seed, resumable, sharded over ranks, per-sample
augmentation seeds) come from :class:`retina.engine.loader.ResumableLoader`, the one batching
implementation; evaluation uses a plain ``DataLoader`` with :func:`collate_detection`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

Target = dict[str, Any]


def collate_detection(batch: Sequence[tuple[torch.Tensor, Target] | None]
                      ) -> tuple[list[torch.Tensor], list[Target]]:
    """``[(image (3,H_i,W_i), target), ...] -> (images, targets)`` lists; ``None`` items
    (broken images skipped by the dataset) are left out."""
    items = [item for item in batch if item is not None]
    return [image for image, _ in items], [target for _, target in items]


def aspect_ratio_group_ids(aspect_ratios: np.ndarray | Sequence[float],
                           boundaries: Sequence[float] = (1.0,)) -> np.ndarray:
    """Group id per image from width/height ratios: ``(N,)`` int64, bins split at
    ``boundaries`` (default: portrait ``w/h < 1`` -> 0, landscape or square -> 1)."""
    return np.digitize(np.asarray(aspect_ratios, dtype=np.float64), np.asarray(boundaries))

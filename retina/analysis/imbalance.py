"""How imbalanced a dataset is under a model's anchors (``retina-stats``).

Every image is matched by :meth:`retina.modeling.retinanet.RetinaNet.assign`, the assignment
the training loss uses: the model's own anchors over the padded input (``size_divisibility``)
and its :class:`~retina.modeling.matcher.Matcher` (by default IoU ≥ 0.5 positive, < 0.4
negative, in between ignored, low-quality matches, crowd boxes ignored). No forward pass is
needed for the counts. With a trained model, the classification loss of every
anchor under CE and under FL (γ = 2, no α, as the paper's Figure 4) tells how much of it the
positives and the hardest 10 % of the negatives carry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "COCO_SIZES",
    "ImageCounts",
    "count_image",
    "dataset_statistics",
    "distribution",
    "format_statistics",
    "loss_shares",
]

COCO_SIZES: tuple[tuple[str, float, float], ...] = (
    ("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, math.inf),
)
"""COCO's object size ranges by area in original-image pixels (box area here)."""

HARD_FRACTION = 0.10
"""The share of negatives, hardest first, whose part of the loss is reported."""


@dataclass
class ImageCounts:
    """One image's anchors and matches. ``positives_per_object``: anchors matched to each
    (non-crowd) object; ``areas``: each object's box area in original pixels."""

    anchors: int
    positive: int
    ignored: int
    negative: int
    labels: list[int] = field(default_factory=list)
    areas: list[float] = field(default_factory=list)
    positives_per_object: list[int] = field(default_factory=list)


def count_image(model: nn.Module, image: Tensor, target: dict[str, Any]) -> ImageCounts:
    """Anchors, positives, ignored, negatives and per-object numbers of one image
    ``(3, H, W)`` (already transformed) with its target."""
    h, w = int(image.shape[-2]), int(image.shape[-1])
    matched = model.assign([image], [target]).matches[0].cpu()
    num_boxes = int(target["boxes"].reshape(-1, 4).shape[0])  # crowd boxes come after these
    boxes = target["boxes"].reshape(-1, 4).double()
    oh, ow = target.get("orig_size", (h, w))
    scale = (float(oh) / h) * (float(ow) / w)
    areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) * scale).tolist()
    per_object = torch.bincount(matched[matched >= 0], minlength=num_boxes)[:num_boxes]
    return ImageCounts(
        anchors=int(matched.numel()),
        positive=int((matched >= 0).sum()),
        ignored=int((matched == -2).sum()),
        negative=int((matched == -1).sum()),
        labels=[int(v) for v in target["labels"].reshape(-1).tolist()],
        areas=[float(a) for a in areas],
        positives_per_object=[int(v) for v in per_object.tolist()],
    )


def distribution(values: Sequence[float]) -> dict[str, float]:
    """``{mean, min, p50, p90, max}`` of ``values`` (NaN for each when empty)."""
    if len(values) == 0:
        return {k: math.nan for k in ("mean", "min", "p50", "p90", "max")}
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "min": float(v.min()), "p50": float(np.percentile(v, 50)),
            "p90": float(np.percentile(v, 90)), "max": float(v.max())}


def dataset_statistics(counts: Sequence[ImageCounts], class_names: Sequence[str]
                       ) -> dict[str, Any]:
    """The ``stats.json`` numbers of a list of per-image counts."""
    objects = [len(c.labels) for c in counts]
    positive = sum(c.positive for c in counts)
    negative = sum(c.negative for c in counts)
    per_object = [n for c in counts for n in c.positives_per_object]
    areas = [a for c in counts for a in c.areas]
    by_size = {name: sum(1 for a in areas if lo <= a < hi) for name, lo, hi in COCO_SIZES}
    by_class = {name: 0 for name in class_names}
    for c in counts:
        for label in c.labels:
            by_class[class_names[label]] += 1
    return {
        "images": len(counts),
        "objects": sum(objects),
        "objects_per_image": distribution(objects),
        "anchors_per_image": distribution([c.anchors for c in counts]),
        "positive_anchors_per_image": distribution([c.positive for c in counts]),
        "ignored_anchors_per_image": distribution([c.ignored for c in counts]),
        "negative_anchors_per_image": distribution([c.negative for c in counts]),
        "negative_to_positive": negative / positive if positive else math.inf,
        "positive_anchors_per_object": distribution(per_object),
        "objects_without_positive_anchor": sum(1 for n in per_object if n == 0),
        "objects_by_size": by_size,
        "objects_by_class": by_class,
    }


def loss_shares(positive: Tensor, negative: Tensor) -> dict[str, float]:
    """Shares of the total classification loss carried by the positive anchors and by the
    hardest :data:`HARD_FRACTION` of the negative anchors (per-anchor losses ``(P,)``,
    ``(Q,)``)."""
    total = float(positive.double().sum() + negative.double().sum())
    k = max(1, math.ceil(HARD_FRACTION * negative.numel())) if negative.numel() else 0
    hard = float(negative.double().topk(k).values.sum()) if k else 0.0
    if total <= 0:
        return {"positives": math.nan, "hardest_10pct_negatives": math.nan}
    return {"positives": float(positive.double().sum()) / total,
            "hardest_10pct_negatives": hard / total}


def _fmt(value: float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "–"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def format_statistics(stats: dict[str, Any], title: str) -> str:
    """``stats.md``: the numbers of :func:`dataset_statistics` (and the loss shares)."""
    lines = [f"# {title}", "", f"{stats['images']} images, {stats['objects']} objects; "
             f"negative:positive anchors = {_fmt(stats['negative_to_positive'])}:1; "
             f"{stats['objects_without_positive_anchor']} objects without a positive anchor.",
             "", "| per image | mean | min | p50 | p90 | max |", "|---|---|---|---|---|---|"]
    for key in ("objects_per_image", "anchors_per_image", "positive_anchors_per_image",
                "ignored_anchors_per_image", "negative_anchors_per_image",
                "positive_anchors_per_object"):
        d = stats[key]
        cells = " | ".join(_fmt(d[k]) for k in ("mean", "min", "p50", "p90", "max"))
        lines.append(f"| {key.replace('_', ' ')} | {cells} |")
    sizes = stats["objects_by_size"]
    lines += ["", "Objects by COCO size (box area in original pixels): "
              + ", ".join(f"{k} {v}" for k, v in sizes.items()) + ".",
              "Objects by class: "
              + ", ".join(f"{k} {v}" for k, v in stats["objects_by_class"].items()) + "."]
    if "loss_shares" in stats:
        lines += ["", "| classification loss share | CE (γ = 0) | FL (γ = 2) |", "|---|---|---|"]
        for key, label in (("positives", "positive anchors"),
                           ("hardest_10pct_negatives", "hardest 10 % of negatives")):
            ce, fl = stats["loss_shares"]["ce"][key], stats["loss_shares"]["fl_gamma2"][key]
            lines.append(f"| {label} | {ce:.1%} | {fl:.1%} |")
    return "\n".join(lines) + "\n"

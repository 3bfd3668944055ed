"""Drawing detections: one palette and one drawing, for ``retina-predict`` and TensorBoard."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

PALETTE = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
)  # fmt: skip


def draw_detections(image: np.ndarray, detections: Sequence[Mapping[str, Any]]) -> Any:
    """Draw boxes with ``"<class> <score>"`` captions on a copy of ``image`` (PIL ImageDraw).

    Args:
        image: RGB ``(H, W, 3)`` uint8.
        detections: entries with ``box`` xyxy (image pixels), ``score``, ``label``,
            ``class_name``.

    Returns:
        A ``PIL.Image`` with the drawing.
    """
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(canvas)
    h, w = image.shape[:2]
    width = max(1, round(min(h, w) / 250))
    font = ImageFont.load_default(size=max(10, round(min(h, w) / 40)))
    for det in sorted(detections, key=lambda d: d["score"]):  # best drawn last, on top
        color = PALETTE[int(det["label"]) % len(PALETTE)]
        x1, y1, x2, y2 = (float(v) for v in det["box"])
        draw.rectangle((x1, y1, max(x1, x2), max(y1, y2)), outline=color, width=width)
        caption = f"{det['class_name']} {det['score']:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        tw, th = right - left, bottom - top + 2
        ty = y1 - th if y1 - th >= 0 else y1  # above the box, or inside it at the top edge
        draw.rectangle((x1, ty, x1 + tw + 4, ty + th), fill=color)
        draw.text((x1 + 2, ty - top + 1), caption, fill=(255, 255, 255), font=font)
    return canvas


def detection_entries(
    detection: Mapping[str, torch.Tensor], class_names: Sequence[str], score_thresh: float = 0.0
) -> list[dict[str, Any]]:
    """A model output (``boxes (D, 4)``, ``scores (D,)``, ``labels (D,)``) as the entries
    :func:`draw_detections` takes, keeping scores ``>= score_thresh``."""
    keep = detection["scores"] >= score_thresh
    boxes = detection["boxes"][keep].detach().float().cpu().tolist()
    scores = detection["scores"][keep].detach().float().cpu().tolist()
    labels = detection["labels"][keep].detach().cpu().tolist()
    return [
        {"box": box, "score": score, "label": label,
         "class_name": class_names[label] if label < len(class_names) else str(label)}
        for box, score, label in zip(boxes, scores, labels, strict=True)
    ]  # fmt: skip


def draw_detections_chw(
    image: torch.Tensor,
    detection: Mapping[str, torch.Tensor],
    class_names: Sequence[str],
    score_thresh: float = 0.3,
) -> torch.Tensor:
    """:func:`draw_detections` for a uint8 ``(3, H, W)`` tensor (TensorBoard's layout);
    returns uint8 ``(3, H, W)``."""
    hwc = image.detach().cpu().permute(1, 2, 0).numpy()
    drawn = draw_detections(hwc, detection_entries(detection, class_names, score_thresh))
    return torch.from_numpy(np.asarray(drawn).copy()).permute(2, 0, 1)

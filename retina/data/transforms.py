"""Albumentations pipelines for detection, built from config by :func:`build_transforms`.

albumentations (and OpenCV) are imported only when a pipeline is built, so that
``import retina.data`` stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

_LAZY: dict[str, type] = {}


def __getattr__(name: str) -> Any:
    """Module attribute ``ShortSideResize``, created on first access (pickle finds it here)."""
    if name == "ShortSideResize":
        return _short_side_resize_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _short_side_resize_class() -> type:
    """The resize transform, defined on first use (it subclasses an albumentations class)."""
    if "ShortSideResize" in _LAZY:
        return _LAZY["ShortSideResize"]
    from albumentations.augmentations.geometric.resize import MaxSizeTransform

    class ShortSideResize(MaxSizeTransform):
        """Scale so the shorter side is a size drawn from ``min_sizes`` and the longer side is
        at most ``max_size``: ``scale = min(s / short, max_size / long)``, then multiplied by
        a factor drawn from ``scale_jitter`` when given (the longer side may then exceed
        ``max_size``; a crop bounds the result)."""

        def __init__(self, min_sizes: Sequence[int], max_size: int,
                     scale_jitter: tuple[float, float] | None = None, p: float = 1.0) -> None:
            super().__init__(max_size=max_size, area_for_downscale="image", p=p)
            self.min_sizes = list(min_sizes)
            self.scale_jitter = scale_jitter

        def get_params_dependent_on_data(self, params: dict[str, Any],
                                         data: dict[str, Any]) -> dict[str, Any]:
            h, w = params["shape"][:2]
            target = self.py_random.choice(self.min_sizes)
            scale = min(target / min(h, w), self.max_size / max(h, w))
            if self.scale_jitter is not None:
                scale *= self.py_random.uniform(*self.scale_jitter)
            return {"scale": scale}

        def get_transform_init_args_names(self) -> tuple[str, ...]:
            return ("min_sizes", "max_size", "scale_jitter")

    ShortSideResize.__qualname__ = "ShortSideResize"
    _LAZY["ShortSideResize"] = ShortSideResize
    return ShortSideResize


class DetectionTransform:
    """``(image HWC uint8, boxes (M,4) xyxy, labels (M,), crowd_boxes (C,4)) -> same``.

    Wraps an albumentations ``Compose`` with pascal_voc ``bbox_params``: boxes are clipped
    to the image, boxes below ``min_visibility`` of their area (after a crop) are dropped,
    and so are boxes that end up narrower or shorter than ``min_box_size`` pixels, each
    together with its label. Crowd boxes go through the same geometry.

    Inside a DataLoader worker the random state is reseeded once from the worker's seed
    (``get_worker_info().seed``, derived from the loader's generator), so workers draw
    different augmentations and a seeded run repeats.
    """

    def __init__(self, compose: Any, min_box_size: float = 1.0) -> None:
        self.compose = compose
        self.min_box_size = min_box_size
        self._seeded_worker: int | None = None

    def set_seed(self, seed: int | None) -> None:
        """Reseed the pipeline's random state (marks the current worker as seeded)."""
        self.compose.set_random_seed(seed)
        info = torch.utils.data.get_worker_info()
        self._seeded_worker = info.id if info is not None else None

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                 crowd_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        info = torch.utils.data.get_worker_info()
        if info is not None and self._seeded_worker != info.id:
            self.set_seed(info.seed % 2**32)
        all_boxes = np.concatenate([np.asarray(boxes, np.float32).reshape(-1, 4),
                                    np.asarray(crowd_boxes, np.float32).reshape(-1, 4)])
        is_crowd = np.r_[np.zeros(len(boxes), bool), np.ones(len(all_boxes) - len(boxes), bool)]
        all_labels = np.r_[np.asarray(labels, np.int64).reshape(-1),
                           np.full(len(all_boxes) - len(boxes), -1, np.int64)]
        out = self.compose(image=image, bboxes=all_boxes, labels=all_labels, is_crowd=is_crowd)
        out_boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        out_labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
        out_crowd = np.asarray(out["is_crowd"], dtype=bool).reshape(-1)
        wh = out_boxes[:, 2:] - out_boxes[:, :2]
        keep = (wh >= self.min_box_size).all(axis=1)
        return (out["image"], out_boxes[keep & ~out_crowd], out_labels[keep & ~out_crowd],
                out_boxes[keep & out_crowd])

    def __repr__(self) -> str:
        return f"DetectionTransform({self.compose!r}, min_box_size={self.min_box_size})"


def build_transforms(train: bool, min_size: int | Sequence[int], max_size: int,
                     flip_prob: float = 0.5, photometric: bool = False,
                     scale_jitter: Sequence[float] | None = None,
                     crop: Sequence[int] | None = None, min_visibility: float = 0.25,
                     min_box_size: float = 1.0, seed: int | None = None) -> DetectionTransform:
    """Detection pipeline for :class:`~retina.data.coco.CocoDetection`.

    Training: resize the shorter side to a size drawn from ``min_size`` (multi-scale when a
    list) with the longer side capped at ``max_size``, optional ``scale_jitter=(lo, hi)``
    factor, optional ``crop=(height, width)`` random crop (padded bottom-right when the
    image is smaller), horizontal flip with ``flip_prob``, optional photometric jitter
    (brightness/contrast, mild hue/saturation). Evaluation (``train=False``): only the
    resize, with the largest of ``min_size`` (the evaluator maps detections back to the
    original size with the ratio of sizes).

    Args:
        min_visibility: boxes keeping less than this fraction of their area are dropped.
        min_box_size: boxes narrower or shorter than this (pixels) are dropped.
        seed: seed of the pipeline's random state (workers reseed, see DetectionTransform).
    """
    import albumentations as A

    sizes = [int(min_size)] if isinstance(min_size, (int, np.integer)) else \
        [int(s) for s in min_size]
    if not sizes or min(sizes) <= 0 or max_size <= 0:
        raise ValueError(f"min_size {min_size!r} and max_size {max_size!r} must be positive")
    if not 0.0 <= flip_prob <= 1.0 or not 0.0 <= min_visibility <= 1.0:
        raise ValueError("flip_prob and min_visibility must lie in [0, 1]")
    jitter = None
    if scale_jitter is not None:
        if len(scale_jitter) != 2 or not 0 < scale_jitter[0] <= scale_jitter[1]:
            raise ValueError(f"scale_jitter must be (lo, hi) with 0 < lo <= hi, got "
                             f"{scale_jitter!r}")
        jitter = (float(scale_jitter[0]), float(scale_jitter[1]))
    resize = _short_side_resize_class()
    if not train:
        steps: list[Any] = [resize([max(sizes)], max_size)]
    else:
        steps = [resize(sizes, max_size, jitter)]
        if crop is not None:
            if len(crop) != 2 or min(crop) <= 0:
                raise ValueError(f"crop must be (height, width) > 0, got {crop!r}")
            steps.append(A.RandomCrop(int(crop[0]), int(crop[1]), pad_if_needed=True,
                                      pad_position="top_left", fill=0))
        if flip_prob > 0:
            steps.append(A.HorizontalFlip(p=flip_prob))
        if photometric:
            steps += [A.RandomBrightnessContrast(0.2, 0.2, p=0.5),
                      A.HueSaturationValue(5, 20, 10, p=0.5)]
    bbox_params = A.BboxParams(format="pascal_voc", label_fields=["labels", "is_crowd"],
                               min_visibility=min_visibility, clip=True,
                               filter_invalid_bboxes=True)
    compose = A.Compose(steps, bbox_params=bbox_params, seed=seed, strict=True)
    return DetectionTransform(compose, min_box_size)

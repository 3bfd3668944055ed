"""COCO-format detection dataset with compact NumPy records and a contiguous label mapping."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from retina.config import INVALID_BOXES_CHOICES
from retina.data.columns import BOX_TOLERANCE, Columns, columns_are_valid, extract_columns
from retina.data.images import read_image
from retina.data.validate import check_coco_dict, load_json, raise_for_problems
from retina.errors import DataError

logger = logging.getLogger(__name__)

SHOWN_IDS = 5
"""Annotation ids named in the one-line invalid-box warning or error."""

Transform = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                     tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
"""``(image HWC uint8, boxes (M,4) xyxy, labels (M,), crowd_boxes (C,4)) -> same``."""


def _pack_strings(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 strings as one uint8 blob plus ``(N+1,)`` offsets: no Python object per record."""
    encoded = [s.encode("utf-8") for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


class CocoDetection(torch.utils.data.Dataset):
    """COCO-format detection dataset.

    Construction reads only the JSON (never an image), runs the validator's JSON checks
    (raising :class:`DataError` with its messages) and keeps every record in NumPy arrays,
    so DataLoader workers share them without copy-on-read growth. Evaluation tools that
    need pycocotools get a ``COCO`` object lazily through :attr:`coco`.

    Labels are contiguous ``0..K-1`` in ascending category-id order:
    ``cat_ids[label] == category_id``; crowd annotations become ``crowd_boxes``.

    Invalid boxes (``retina-check-data``'s warnings) are handled at construction by
    ``invalid_boxes``: with ``"drop"`` boxes of zero or negative width/height are dropped,
    boxes beyond their image clipped to it (dropped when nothing is left), and one warning
    line gives the counts and the first annotation ids (:attr:`num_dropped_boxes`,
    :attr:`num_clipped_boxes`); with ``"error"`` they raise :class:`DataError`.

    Broken images met while loading (unreadable, corrupt, or of another size than the
    JSON says) are logged, counted in :attr:`num_broken` (per process: each DataLoader
    worker counts its own) and skipped: with ``on_broken="next"`` the next valid image is
    returned in its place (training); with ``"skip"`` the item is ``None`` and
    :func:`~retina.data.batching.collate_detection` leaves it out (evaluation, where a
    substitute would duplicate an image id). When more than ``max_broken_fraction`` of the
    dataset is broken, :class:`DataError` stops the run.

    Args:
        ann_file: COCO annotation JSON.
        image_root: directory that each image's ``file_name`` is relative to.
        transforms: callable applied to numpy data, see :data:`Transform`
            (e.g. :func:`~retina.data.transforms.build_transforms`).
        drop_empty: drop images with no non-crowd box (set for training; keep ``False`` for
            evaluation so every image is scored).
        check: run the JSON checks at construction.
        max_broken_fraction: fraction of broken images tolerated before the run stops.
        on_broken: ``"next"`` or ``"skip"``, see above.
        invalid_boxes: ``"drop"`` or ``"error"``, see above.
    """

    def __init__(self, ann_file: str | Path, image_root: str | Path,
                 transforms: Transform | None = None, *, drop_empty: bool = False,
                 check: bool = True, max_broken_fraction: float = 0.01,
                 on_broken: Literal["next", "skip"] = "next",
                 invalid_boxes: Literal["drop", "error"] = "drop") -> None:
        if on_broken not in ("next", "skip"):
            raise DataError(f"on_broken must be 'next' or 'skip', got {on_broken!r}")
        if invalid_boxes not in INVALID_BOXES_CHOICES:
            raise DataError(f"invalid_boxes must be 'drop' or 'error', got {invalid_boxes!r}")
        self.invalid_boxes = invalid_boxes
        if not 0.0 <= max_broken_fraction <= 1.0:
            raise DataError(f"max_broken_fraction must be in [0, 1], got {max_broken_fraction}")
        self.ann_file = str(ann_file)
        self.image_root = str(image_root)
        self.transforms = transforms
        self.drop_empty = drop_empty
        self.max_broken_fraction = max_broken_fraction
        self.on_broken = on_broken
        self.num_broken = 0
        self._broken: set[int] = set()
        self._coco: Any = None
        self._load(check)
        # Python objects are created only after the parsed JSON is freed, so that they do not
        # pin its memory arenas
        self.cat_ids: list[int] = self._cat_ids.tolist()
        blob, offsets = self._cat_names
        self.class_names: list[str] = [blob[offsets[i]:offsets[i + 1]].tobytes().decode("utf-8")
                                       for i in range(len(offsets) - 1)]
        del self._cat_names

    # ------------------------------------------------------------------ loading
    def _load(self, check: bool) -> None:
        data, problems = load_json(self.ann_file)
        raise_for_problems(problems)
        cols = extract_columns(data)
        if check and (cols is None or not columns_are_valid(cols)):
            raise_for_problems(check_coco_dict(data, self.ann_file))
        if cols is None:
            raise DataError(f"{self.ann_file}: malformed annotations; run retina-check-data "
                            "for details")
        try:
            self._build_arrays(cols)
        except (ValueError, IndexError) as exc:
            raise DataError(f"{self.ann_file}: malformed annotations ({exc}); run "
                            "retina-check-data for details") from None
        # drop every object of the parsed JSON before anything long-lived is allocated
        del data, cols
        gc.collect()

    def _build_arrays(self, cols: Columns) -> None:
        order_k = np.argsort(cols.cat_ids, kind="stable")
        self._cat_ids = cols.cat_ids[order_k]
        self._cat_names = _pack_strings([cols.cat_names[k] for k in order_k])
        num_images = len(cols.image_ids)
        self._widths = cols.widths.astype(np.int32)
        self._heights = cols.heights.astype(np.int32)
        self._names, self._name_offsets = _pack_strings(cols.file_names)
        cols.file_names.clear()

        order = np.argsort(cols.image_ids, kind="stable")
        image_pos = order[np.searchsorted(cols.image_ids, cols.ann_image_ids, sorter=order)]
        labels = np.searchsorted(self._cat_ids, cols.ann_cat_ids)
        if len(labels) and (
            np.any(cols.image_ids[image_pos] != cols.ann_image_ids)
            or np.any(self._cat_ids[np.minimum(labels, len(self._cat_ids) - 1)]
                      != cols.ann_cat_ids)
        ):
            raise ValueError("an annotation refers to a missing image or category")
        xyxy, keep = self._repair_boxes(cols, image_pos)
        by_image = np.argsort(image_pos[keep], kind="stable")
        sel = np.flatnonzero(keep)[by_image]
        self._boxes = xyxy[sel].astype(np.float32)  # (A, 4) xyxy, grouped by image
        self._labels = labels[sel].astype(np.int16 if len(self._cat_ids) < 2**15 else np.int64)
        self._crowd = cols.iscrowd[sel] != 0
        counts = np.bincount(image_pos[sel], minlength=num_images)
        self._ann_offsets = np.zeros(num_images + 1, dtype=np.int64)
        np.cumsum(counts, out=self._ann_offsets[1:])
        self._image_ids = cols.image_ids
        non_crowd = np.bincount(image_pos[sel][~self._crowd], minlength=num_images)
        served = np.flatnonzero(non_crowd > 0) if self.drop_empty else np.arange(num_images)
        self._served = served.astype(np.int64)  # dataset index -> image position

    def _repair_boxes(self, cols: Columns, image_pos: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """``(xyxy (A, 4) float64 clipped to each image, keep (A,) bool)``; applies
        :attr:`invalid_boxes` to what ``retina-check-data`` warns about."""
        xywh = cols.bboxes
        finite = np.isfinite(xywh).all(axis=1)
        xyxy = np.where(finite[:, None], xywh, 0.0)
        xyxy[:, 2:] += xyxy[:, :2]
        w = cols.widths[image_pos].astype(np.float64)
        h = cols.heights[image_pos].astype(np.float64)
        tol = BOX_TOLERANCE
        outside = finite & ((xyxy[:, 0] < -tol) | (xyxy[:, 1] < -tol)
                            | (xyxy[:, 2] > w + tol) | (xyxy[:, 3] > h + tol))
        zero = ~finite | (xywh[:, 2] <= 0) | (xywh[:, 3] <= 0)
        np.clip(xyxy[:, 0::2], 0.0, w[:, None], out=xyxy[:, 0::2])
        np.clip(xyxy[:, 1::2], 0.0, h[:, None], out=xyxy[:, 1::2])
        keep = ~zero & (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        dropped, clipped = ~keep, outside & keep
        self.num_dropped_boxes = int(dropped.sum())
        self.num_clipped_boxes = int(clipped.sum())
        if not (self.num_dropped_boxes or self.num_clipped_boxes):
            return xyxy, keep

        def ids(mask: np.ndarray) -> str:
            shown = cols.ann_ids[mask][:SHOWN_IDS].tolist()
            more = ", ..." if mask.sum() > SHOWN_IDS else ""
            return f"annotation ids {', '.join(map(str, shown))}{more}"

        parts = []
        if self.num_dropped_boxes:
            parts.append(f"{self.num_dropped_boxes} box(es) of zero area or wholly outside "
                         f"their image ({ids(dropped)})")
        if self.num_clipped_boxes:
            parts.append(f"{self.num_clipped_boxes} box(es) partly outside their image "
                         f"({ids(clipped)})")
        if self.invalid_boxes == "error":
            raise DataError(f"{self.ann_file}: {' and '.join(parts)} (data.invalid_boxes=error;"
                            " data.invalid_boxes=drop drops or clips them)")
        actions = (["dropped " + parts[0]] if self.num_dropped_boxes else []) + \
            (["clipped " + parts[-1]] if self.num_clipped_boxes else [])
        logger.warning("%s: %s", self.ann_file, "; ".join(actions))
        return xyxy, keep

    # ------------------------------------------------------------------ mapping
    @property
    def num_classes(self) -> int:
        """Number of categories K."""
        return len(self.cat_ids)

    def label_to_cat_id(self, labels: torch.Tensor | np.ndarray | Sequence[int]
                        ) -> torch.Tensor | np.ndarray:
        """Contiguous labels ``(N,)`` -> COCO category ids ``(N,)`` (tensor in, tensor out)."""
        lookup = np.asarray(self.cat_ids, dtype=np.int64)
        if isinstance(labels, torch.Tensor):
            return torch.as_tensor(lookup, device=labels.device)[labels.long()]
        return lookup[np.asarray(labels, dtype=np.int64)]

    def cat_id_to_label(self, cat_ids: torch.Tensor | np.ndarray | Sequence[int]
                        ) -> torch.Tensor | np.ndarray:
        """COCO category ids ``(N,)`` -> contiguous labels ``(N,)``; unknown ids raise."""
        lookup = np.asarray(self.cat_ids, dtype=np.int64)
        values = cat_ids.cpu().numpy() if isinstance(cat_ids, torch.Tensor) else cat_ids
        values = np.asarray(values, dtype=np.int64)
        labels = np.searchsorted(lookup, values)
        if labels.size and (np.any(labels >= len(lookup))
                            or np.any(lookup[np.minimum(labels, len(lookup) - 1)] != values)):
            raise DataError(f"{self.ann_file}: unknown category id(s) in {values.tolist()}")
        if isinstance(cat_ids, torch.Tensor):
            return torch.as_tensor(labels, device=cat_ids.device)
        return labels

    def label_mapping(self) -> dict[str, list]:
        """``{"cat_ids": [...], "class_names": [...]}`` for checkpoints and results."""
        return {"cat_ids": list(self.cat_ids), "class_names": list(self.class_names)}

    @property
    def image_ids(self) -> list[int]:
        """COCO image ids served, in dataset-index order."""
        return self._image_ids[self._served].tolist()

    # ------------------------------------------------------------------ records
    def __len__(self) -> int:
        return len(self._served)

    def image_info(self, index: int) -> dict[str, Any]:
        """``{"id", "file_name", "width", "height"}`` of dataset item ``index`` (no I/O)."""
        pos = int(self._served[index])
        lo, hi = self._name_offsets[pos], self._name_offsets[pos + 1]
        return {"id": int(self._image_ids[pos]),
                "file_name": self._names[lo:hi].tobytes().decode("utf-8"),
                "width": int(self._widths[pos]), "height": int(self._heights[pos])}

    def aspect_ratios(self) -> np.ndarray:
        """Width / height of every served image, ``(N,)`` float32, from the JSON."""
        pos = self._served
        return (self._widths[pos] / self._heights[pos]).astype(np.float32)

    def annotations(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(boxes (M,4) xyxy float32, labels (M,) int64, crowd_boxes (C,4))`` from the JSON."""
        pos = int(self._served[index])
        lo, hi = self._ann_offsets[pos], self._ann_offsets[pos + 1]
        boxes, labels, crowd = self._boxes[lo:hi], self._labels[lo:hi], self._crowd[lo:hi]
        return boxes[~crowd].copy(), labels[~crowd].astype(np.int64), boxes[crowd].copy()

    @property
    def coco(self) -> Any:
        """A pycocotools ``COCO`` of :attr:`ann_file`, built on first use (for evaluation)."""
        if self._coco is None:
            import contextlib
            import io

            from pycocotools.coco import COCO

            with contextlib.redirect_stdout(io.StringIO()):
                self._coco = COCO(self.ann_file)
        return self._coco

    # ------------------------------------------------------------------ items
    def _read_image(self, info: dict[str, Any]) -> np.ndarray:
        image = read_image(Path(self.image_root) / info["file_name"])
        if image.shape[:2] != (info["height"], info["width"]):
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but the JSON says"
                             f" {info['width']}x{info['height']}")
        return image

    def _note_broken(self, index: int, info: dict[str, Any], exc: Exception) -> None:
        self._broken.add(index)
        self.num_broken += 1
        path = Path(self.image_root) / info["file_name"]
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        reason = reason.removeprefix(f"{path}: ")  # read_image's errors name the file already
        logger.warning("skipping broken image %s (image id %d): %s", path, info["id"], reason)
        if self.num_broken > self.max_broken_fraction * len(self):
            raise DataError(f"{self.num_broken} of {len(self)} images are broken (more than "
                            f"max_broken_fraction={self.max_broken_fraction}); last: {path} "
                            f"(image id {info['id']}): {reason}")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]] | None:
        """Item ``index`` as ``(image (3,H,W) uint8, target)``; see the class docstring."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index %= len(self)
        for attempt in range(len(self)):
            current = (index + attempt) % len(self)
            if current in self._broken:
                continue
            info = self.image_info(current)
            try:
                image = self._read_image(info)
            except Exception as exc:  # noqa: BLE001 - decoders raise many types
                self._note_broken(current, info, exc)
                if self.on_broken == "skip":
                    return None
                continue
            return self._make_item(current, info, image)
        raise DataError(f"{self.ann_file}: no readable image left in {self.image_root}")

    def _make_item(self, index: int, info: dict[str, Any], image: np.ndarray
                   ) -> tuple[torch.Tensor, dict[str, Any]]:
        boxes, labels, crowd = self.annotations(index)
        h, w = image.shape[:2]
        for b in (boxes, crowd):
            np.clip(b[:, 0::2], 0, w, out=b[:, 0::2])
            np.clip(b[:, 1::2], 0, h, out=b[:, 1::2])
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, labels = boxes[valid], labels[valid]
        crowd = crowd[(crowd[:, 2] > crowd[:, 0]) & (crowd[:, 3] > crowd[:, 1])]
        if self.transforms is not None:
            image, boxes, labels, crowd = self.transforms(image, boxes, labels, crowd)
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        target = {
            "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
            "crowd_boxes": torch.as_tensor(crowd, dtype=torch.float32).reshape(-1, 4),
            "image_id": info["id"],
            "orig_size": (h, w),
        }
        return tensor, target


def detections_to_coco_results(
    detections: Iterable[dict[str, Any]], cat_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """Detections (xyxy, contiguous labels) → COCO results entries (xywh, category ids).

    Raises:
        ValueError: a label outside ``0..len(cat_ids)-1``.
    """
    lookup = np.asarray(list(cat_ids), dtype=np.int64)
    results = []
    for det in detections:
        boxes = _as_numpy(det["boxes"], np.float64).reshape(-1, 4)
        scores = _as_numpy(det["scores"], np.float64).reshape(-1)
        labels = _as_numpy(det["labels"], np.int64).reshape(-1)
        if labels.size and (labels.min() < 0 or labels.max() >= len(lookup)):
            raise ValueError(
                f"image {det['image_id']}: label {int(labels.max())} outside the dataset's "
                f"{len(lookup)} classes"
            )
        xywh = boxes.copy()
        xywh[:, 2:] -= xywh[:, :2]
        image_id = int(det["image_id"])
        rows = zip(xywh.tolist(), scores.tolist(), lookup[labels].tolist(), strict=True)
        for box, score, label in rows:
            results.append(
                {"image_id": image_id, "category_id": label, "bbox": box, "score": score}
            )
    return results


def _as_numpy(value: Any, dtype: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)

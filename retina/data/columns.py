"""A parsed COCO dict as NumPy columns, with a vectorised validity test.

This is the fast path shared by the validator and :class:`~retina.data.coco.CocoDetection`:
type checks run as C-level ``set(map(type, ...))`` passes and the numeric checks on arrays,
so a train2017-sized file is checked in about the time it takes to parse. Only when the
fast test fails does the validator walk the records one by one to word each problem.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

BOX_TOLERANCE = 1.0
"""Pixels a box may extend beyond the image border before it is reported."""


@dataclass
class Columns:
    """Records of a COCO dict; ``I`` images, ``A`` annotations, ``K`` categories."""

    image_ids: np.ndarray  # (I,) int64
    widths: np.ndarray  # (I,) int64
    heights: np.ndarray  # (I,) int64
    file_names: list[str]  # (I,)
    ann_ids: np.ndarray  # (A,) int64
    ann_image_ids: np.ndarray  # (A,) int64
    ann_cat_ids: np.ndarray  # (A,) int64
    bboxes: np.ndarray  # (A, 4) float64 xywh
    iscrowd: np.ndarray  # (A,) int64, 0 or 1 when valid
    cat_ids: np.ndarray  # (K,) int64
    cat_names: list[str]  # (K,)


def _types(values: Any) -> set[type]:
    return set(map(type, values))


def extract_columns(data: Any) -> Columns | None:
    """Columns of ``data``, or ``None`` when its structure or types are not plain COCO
    (non-dict records, missing keys, ids that are not integers, boxes that are not four
    numbers, ...). Values are not range-checked here; see :func:`columns_are_valid`."""
    if not isinstance(data, dict):
        return None
    images, anns, cats = data.get("images"), data.get("annotations"), data.get("categories")
    if not (type(images) is list and type(anns) is list and type(cats) is list):
        return None
    if not (_types(images) <= {dict} and _types(anns) <= {dict} and _types(cats) <= {dict}):
        return None
    try:  # a missing key raises here, which is cheaper than testing every record's keys
        image_ids = [img["id"] for img in images]
        widths = [img["width"] for img in images]
        heights = [img["height"] for img in images]
        file_names = [img["file_name"] for img in images]
        ann_ids = [a["id"] for a in anns]
        ann_image_ids = [a["image_id"] for a in anns]
        ann_cat_ids = [a["category_id"] for a in anns]
        bboxes = [a["bbox"] for a in anns]
        iscrowd = [a.get("iscrowd", 0) for a in anns]
        cat_ids = [c["id"] for c in cats]
        cat_names = [str(c["name"]) for c in cats]
    except KeyError:
        return None
    ints = (image_ids, widths, heights, ann_ids, ann_image_ids, ann_cat_ids, iscrowd, cat_ids)
    if any(not _types(col) <= {int} for col in ints[:6] + ints[7:]) or \
            not _types(iscrowd) <= {int, bool}:
        return None
    if not _types(file_names) <= {str} or not _types(bboxes) <= {list} or \
            not set(map(len, bboxes)) <= {4} or \
            not _types(itertools.chain.from_iterable(bboxes)) <= {int, float}:
        return None
    try:
        as_int = [np.array(col, dtype=np.int64) for col in ints]
    except OverflowError:  # an id beyond int64
        return None
    return Columns(
        image_ids=as_int[0], widths=as_int[1], heights=as_int[2], file_names=file_names,
        ann_ids=as_int[3], ann_image_ids=as_int[4], ann_cat_ids=as_int[5],
        bboxes=np.array(bboxes, dtype=np.float64).reshape(-1, 4), iscrowd=as_int[6],
        cat_ids=as_int[7], cat_names=cat_names,
    )


def _unique(values: np.ndarray) -> bool:
    return len(np.unique(values)) == len(values)


def columns_are_valid(cols: Columns) -> bool:
    """True when the columns pass every JSON check of the validator."""
    if not (_unique(cols.image_ids) and _unique(cols.ann_ids) and _unique(cols.cat_ids)):
        return False
    if np.any(cols.widths <= 0) or np.any(cols.heights <= 0) or not all(cols.file_names):
        return False
    if not np.all(np.isin(cols.ann_image_ids, cols.image_ids)) or \
            not np.all(np.isin(cols.ann_cat_ids, cols.cat_ids)):
        return False
    if not np.all(np.isin(np.unique(cols.iscrowd), (0, 1))):
        return False
    boxes = cols.bboxes
    if not np.isfinite(boxes).all() or np.any(boxes[:, 2:] <= 0):
        return False
    order = np.argsort(cols.image_ids)
    pos = order[np.searchsorted(cols.image_ids, cols.ann_image_ids, sorter=order)]
    tol = BOX_TOLERANCE
    return bool(np.all(boxes[:, :2] >= -tol)
                and np.all(boxes[:, 0] + boxes[:, 2] <= cols.widths[pos] + tol)
                and np.all(boxes[:, 1] + boxes[:, 3] <= cols.heights[pos] + tol))

"""COCO annotation and image validator (``retina-check-data``).

:func:`validate_coco` lists every problem of a COCO-format dataset, each as a one-line
message naming the annotation id, image id or file. :func:`check_coco_dict` holds the JSON
checks alone; :class:`~retina.data.coco.CocoDetection` runs them before any work and raises
:class:`DataError` with the same messages.

A problem is an *error* when the data cannot be used (broken JSON, missing or unreadable
images, unknown ids, non-finite numbers, sizes that disagree) and a *warning* when loading
repairs it (``data.invalid_boxes: drop``): boxes of zero or negative width/height are
dropped, boxes beyond the image are clipped (and dropped when nothing is left inside).
``retina-check-data`` exits 1 on errors, and on warnings too with ``--strict``.

Boxes may exceed the image by at most ``BOX_TOLERANCE`` pixels (rounding in real datasets).
Clean files take the vectorised path of :mod:`retina.data.columns`; the record-by-record
walk below only runs to word the problems of a file that failed it.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retina.data.columns import BOX_TOLERANCE, columns_are_valid, extract_columns
from retina.data.images import SWAPS_AXES, image_header, read_image
from retina.errors import DataError
from retina.utils.io import non_regular_kind


@dataclass(frozen=True)
class Problem:
    """One problem found in a dataset; ``message`` is a single line naming its location."""

    message: str
    image_id: int | None = None
    ann_id: int | None = None
    file: str | None = None
    severity: str = "error"
    """``"error"`` (the data cannot be used) or ``"warning"`` (loading repairs it)."""

    @property
    def is_error(self) -> bool:
        """True for an error, False for a warning."""
        return self.severity != "warning"

    def __str__(self) -> str:
        return self.message


def load_json(ann_file: str | Path) -> tuple[Any, list[Problem]]:
    """Parse ``ann_file``; returns ``(data, [])`` or ``(None, [problem])``."""
    path = str(ann_file)
    kind = non_regular_kind(path)
    if kind is not None:
        return None, [Problem(f"{path}: annotation file is {kind}, not a regular file", file=path)]
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the parse allocates millions of containers; collecting them meanwhile
    try:          # only costs time (about half of the parse on a train2017-sized file)
        with open(path, encoding="utf-8") as handle:
            return json.load(handle), []
    except FileNotFoundError:
        return None, [Problem(f"{path}: annotation file not found", file=path)]
    except json.JSONDecodeError as exc:
        return None, [Problem(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}:"
                              f" {exc.msg}", file=path)]
    except (OSError, UnicodeDecodeError, RecursionError) as exc:
        return None, [Problem(f"{path}: cannot read annotation file: {exc}", file=path)]
    finally:
        if gc_was_enabled:
            gc.enable()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _entries(items: list, kind: str, required: tuple[str, ...], source: str,
             problems: list[Problem]) -> Iterator[tuple[int, dict, Any, str, list[str]]]:
    """``(position, entry, its id, where, missing required keys)`` of each object in the
    ``kind`` list (``"image"``, ``"annotation"``); ``where`` names it by its id when that is an
    integer (``image id 3``), else by position (``images[2]``). An entry that is not an
    object is reported and skipped."""
    for pos, entry in enumerate(items):
        if not isinstance(entry, dict):
            problems.append(Problem(f"{source}: {kind}s[{pos}] is not an object"))
            continue
        entry_id = entry.get("id")
        where = f"{kind} id {entry_id}" if _is_int(entry_id) else f"{kind}s[{pos}]"
        yield pos, entry, entry_id, where, [k for k in required if k not in entry]


def _check_images(images: list, source: str, problems: list[Problem]
                  ) -> dict[int, tuple | None]:
    """Image id -> (width, height); ``None`` for an image already reported as malformed."""
    sizes: dict[int, tuple | None] = {}
    required = ("id", "file_name", "width", "height")
    for _, img, image_id, where, missing in _entries(images, "image", required, source,
                                                     problems):
        if "id" in missing or not _is_int(image_id):
            problems.append(Problem(f"{source}: {where}: needs an integer id, got {image_id!r}"))
            continue
        if image_id in sizes:
            problems.append(Problem(f"{source}: image id {image_id}: duplicate image id",
                                    image_id=image_id))
            continue
        sizes[image_id] = None  # known but unusable until its fields pass
        if missing:
            problems.append(Problem(f"{source}: {where}: missing key(s) {', '.join(missing)}",
                                    image_id=image_id))
            continue
        w, h = img["width"], img["height"]
        if not (_is_int(w) and _is_int(h) and w > 0 and h > 0):
            problems.append(Problem(f"{source}: {where}: width/height must be positive integers,"
                                    f" got {w!r}x{h!r}", image_id=image_id))
            continue
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            problems.append(Problem(f"{source}: {where}: file_name must be a non-empty string",
                                    image_id=image_id))
            continue
        sizes[image_id] = (w, h)
    return sizes


def _check_categories(categories: list, source: str, problems: list[Problem]) -> set[int]:
    cat_ids: set[int] = set()
    for pos, cat in enumerate(categories):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or "name" not in cat:
            problems.append(Problem(f"{source}: categories[{pos}]: needs an integer 'id' and"
                                    " a 'name'"))
            continue
        if cat["id"] in cat_ids:
            problems.append(Problem(f"{source}: category id {cat['id']}: duplicate category id"))
        cat_ids.add(cat["id"])
    return cat_ids


def duplicate_category_names(categories: list, source: str) -> list[Problem]:
    """One problem per category name used by more than one category: their boxes would be
    reported under one name (``per_category`` would merge them)."""
    seen: dict[str, Any] = {}
    problems = []
    for cat in categories:
        if not isinstance(cat, dict) or not isinstance(cat.get("name"), str):
            continue
        name = cat["name"]
        if name in seen:
            problems.append(Problem(f"{source}: category name {name!r} is used by category ids "
                                    f"{seen[name]!r} and {cat.get('id')!r}; names must be unique"))
        else:
            seen[name] = cat.get("id")
    return problems


def _check_boxes(records: list[tuple[int, int, list, int]], sizes: dict[int, tuple | None],
                 source: str, problems: list[Problem]) -> None:
    """Vectorised box checks over ``(ann_id, image_id, bbox, position)`` records."""
    if not records:
        return
    boxes = np.array([r[2] for r in records], dtype=np.float64)  # (N, 4) xywh
    wh = np.array([sizes[r[1]] for r in records], dtype=np.float64)
    finite = np.isfinite(boxes).all(axis=1)
    with np.errstate(invalid="ignore"):
        positive = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        inside = ((boxes[:, 0] >= -BOX_TOLERANCE) & (boxes[:, 1] >= -BOX_TOLERANCE)
                  & (boxes[:, 0] + boxes[:, 2] <= wh[:, 0] + BOX_TOLERANCE)
                  & (boxes[:, 1] + boxes[:, 3] <= wh[:, 1] + BOX_TOLERANCE))
    for i in np.flatnonzero(~(finite & positive & inside)):
        ann_id, image_id, bbox, _ = records[i]
        where = f"{source}: annotation id {ann_id} (image id {image_id})"
        severity = "warning"
        if not finite[i]:
            reason, severity = f"bbox has non-finite values {bbox}", "error"
        elif not positive[i]:
            reason = f"bbox width/height must be > 0, got {bbox} (dropped when loading)"
        else:
            w, h = sizes[image_id]
            x1, y1 = max(boxes[i, 0], 0.0), max(boxes[i, 1], 0.0)
            x2 = min(boxes[i, 0] + boxes[i, 2], w)
            y2 = min(boxes[i, 1] + boxes[i, 3], h)
            repair = "clipped when loading" if x2 > x1 and y2 > y1 else \
                "dropped when loading: nothing of it is inside"
            reason = f"bbox {bbox} lies outside the {w}x{h} image ({repair})"
        problems.append(Problem(f"{where}: {reason}", image_id=image_id, ann_id=ann_id,
                                severity=severity))


def _check_annotations(annotations: list, sizes: dict[int, tuple | None], cat_ids: set[int],
                       source: str, problems: list[Problem]) -> None:
    seen: set[int] = set()
    records: list[tuple[int, int, list, int]] = []
    required = ("id", "image_id", "category_id", "bbox")
    for pos, ann, ann_id, where, missing in _entries(annotations, "annotation", required,
                                                     source, problems):
        if missing:
            problems.append(Problem(f"{source}: {where}: missing key(s) {', '.join(missing)}",
                                    ann_id=ann_id if _is_int(ann_id) else None))
            continue
        image_id = ann["image_id"]
        if not _is_int(ann_id):
            problems.append(Problem(f"{source}: {where}: id must be an integer, got {ann_id!r}"))
            continue
        if ann_id in seen:
            problems.append(Problem(f"{source}: annotation id {ann_id}: duplicate annotation id",
                                    ann_id=ann_id))
            continue
        seen.add(ann_id)
        where = f"{source}: annotation id {ann_id} (image id {image_id})"
        if not _is_int(image_id) or image_id not in sizes:
            problems.append(Problem(f"{where}: image id {image_id} does not exist",
                                    image_id=None, ann_id=ann_id))
            continue
        if sizes[image_id] is None:  # its image is malformed and already reported
            continue
        if not _is_int(ann["category_id"]) or ann["category_id"] not in cat_ids:
            problems.append(Problem(f"{where}: category id {ann['category_id']!r} does not exist",
                                    image_id=image_id, ann_id=ann_id))
            continue
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            problems.append(Problem(f"{where}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}",
                                    image_id=image_id, ann_id=ann_id))
            continue
        if ann.get("iscrowd", 0) not in (0, 1):
            problems.append(Problem(f"{where}: iscrowd must be 0 or 1, got {ann['iscrowd']!r}",
                                    image_id=image_id, ann_id=ann_id))
            continue
        records.append((ann_id, image_id, bbox, pos))
    _check_boxes(records, sizes, source, problems)


def check_coco_dict(data: Any, source: str = "<annotations>") -> list[Problem]:
    """JSON-level checks of a parsed COCO dict; ``source`` (the file) prefixes each message."""
    if not isinstance(data, dict):
        return [Problem(f"{source}: top level must be a JSON object, got {type(data).__name__}",
                        file=source)]
    problems: list[Problem] = []
    for key in ("images", "annotations", "categories"):
        if key not in data:
            problems.append(Problem(f"{source}: missing top-level key '{key}'", file=source))
        elif not isinstance(data[key], list):
            problems.append(Problem(f"{source}: '{key}' must be a list", file=source))
    if problems:
        return problems
    names = duplicate_category_names(data["categories"], source)
    cols = extract_columns(data)
    if cols is not None and columns_are_valid(cols):
        return names  # fast path: nothing else to word
    sizes = _check_images(data["images"], source, problems)
    cat_ids = _check_categories(data["categories"], source, problems)
    _check_annotations(data["annotations"], sizes, cat_ids, source, problems)
    return names + problems


def _boxes_outside(data: dict) -> dict[int, list[tuple[int, list]]]:
    """Image id -> ``(annotation id, bbox)`` of its well-formed boxes that reach beyond the
    image's JSON width or height (by more than ``BOX_TOLERANCE``)."""
    sizes = {img["id"]: (img["width"], img["height"]) for img in data["images"]
             if isinstance(img, dict) and _is_int(img.get("id"))
             and _is_int(img.get("width")) and _is_int(img.get("height"))}
    outside: dict[int, list[tuple[int, list]]] = {}
    annotations = data.get("annotations")
    for ann in annotations if isinstance(annotations, list) else ():
        if not isinstance(ann, dict):
            continue
        image_id, bbox = ann.get("image_id"), ann.get("bbox")
        size = sizes.get(image_id) if _is_int(image_id) else None
        if size is None or not (isinstance(bbox, list) and len(bbox) == 4
                                and all(_is_number(v) for v in bbox)):
            continue
        x, y, w, h = bbox
        if x + w > size[0] + BOX_TOLERANCE or y + h > size[1] + BOX_TOLERANCE:
            outside.setdefault(image_id, []).append((ann.get("id"), bbox))
    return outside


def _stored_frame_boxes(path: Path, where: str, image_id: int, upright: tuple[int, int],
                        boxes: list[tuple[int, list]]) -> list[Problem]:
    """Errors for ``boxes`` that lie outside the upright image at ``path`` but inside its
    stored frame, when it has an EXIF orientation that swaps width and height: they were
    drawn on the stored pixels and land elsewhere once the image is turned upright."""
    stored, orientation = image_header(path)
    if orientation not in SWAPS_AXES:
        return []
    return [Problem(f"{where}: annotation id {ann_id}: bbox {bbox} lies outside the "
                    f"{upright[0]}x{upright[1]} image (upright by its EXIF orientation "
                    f"{orientation}) but inside its stored {stored[0]}x{stored[1]} pixels: "
                    "drawn on the un-rotated image? Turn the boxes upright (retina-convert-"
                    "data voc does) or remove the EXIF orientation", image_id, ann_id,
                    file=str(path))
            for ann_id, bbox in boxes
            if bbox[0] + bbox[2] <= stored[0] + BOX_TOLERANCE
            and bbox[1] + bbox[3] <= stored[1] + BOX_TOLERANCE]


def check_image_files(data: dict, image_root: str | Path) -> list[Problem]:
    """Decode every image as training does (:func:`~retina.data.images.read_image`: upright
    by its EXIF orientation); report missing, unreadable or mis-sized files, and boxes beyond
    an EXIF-oriented image that fit its stored frame (drawn before it was turned upright)."""
    problems: list[Problem] = []
    root = Path(image_root)
    images = data.get("images")
    if not isinstance(images, list):  # reported by the JSON checks
        return problems
    outside = _boxes_outside(data)
    for img in images:
        if not (isinstance(img, dict) and isinstance(img.get("file_name"), str)):
            continue
        path = root / img["file_name"]
        image_id = img.get("id")
        where = f"{path} (image id {image_id})"
        if not path.is_file():
            problems.append(Problem(f"{where}: image file is missing", image_id, file=str(path)))
            continue
        try:
            pixels = read_image(path)
        except DataError as exc:
            reason = str(exc).removeprefix(f"{path}: ")
            problems.append(Problem(f"{where}: unreadable or corrupt image: {reason}", image_id,
                                    file=str(path)))
            continue
        size = (pixels.shape[1], pixels.shape[0])
        del pixels
        expected = (img.get("width"), img.get("height"))
        if all(_is_int(v) and v > 0 for v in expected) and size != expected:
            upright = " once turned upright by its EXIF orientation" \
                if size[::-1] == expected else ""
            problems.append(Problem(f"{where}: image is {size[0]}x{size[1]}{upright} but the "
                                    f"JSON says {expected[0]}x{expected[1]}", image_id,
                                    file=str(path)))
        elif isinstance(image_id, int | str) and outside.get(image_id):
            problems += _stored_frame_boxes(path, where, image_id, size, outside[image_id])
    return problems


def validate_coco(ann_file: str | Path, image_root: str | Path | None = None,
                  check_images: bool = True) -> list[Problem]:
    """Every problem of a COCO-format dataset, in file order (empty when clean).

    Args:
        ann_file: the annotation JSON.
        image_root: directory that ``file_name`` is relative to; needed when ``check_images``.
        check_images: also open and decode every image and compare its size with the JSON.
    """
    data, problems = load_json(ann_file)
    if data is None:
        return problems
    problems = check_coco_dict(data, str(ann_file))
    if check_images and image_root is not None and isinstance(data, dict):
        found = check_image_files(data, image_root)
        stored_frame = {p.ann_id for p in found if p.ann_id is not None}
        problems = [p for p in problems if p.is_error or p.ann_id not in stored_frame] + found
    return problems


def raise_for_problems(problems: Sequence[Problem], warnings: bool = False) -> None:
    """Raise :class:`DataError` with the first error (and how many more) when any exist;
    warnings count too when ``warnings`` is set."""
    problems = [p for p in problems if warnings or p.is_error]
    if problems:
        more = f" (and {len(problems) - 1} more problems; run retina-check-data)" \
            if len(problems) > 1 else ""
        raise DataError(f"{problems[0].message}{more}")

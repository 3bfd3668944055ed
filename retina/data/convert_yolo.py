"""ultralytics YOLO labels -> a COCO dict (``retina-convert-data yolo``).

:func:`convert_yolo` is pure: it reads the label files and the image headers (never decodes
an image) and returns ``(coco_dict, ConversionReport)``. Unusable input raises
:class:`~retina.errors.DataError` with one line naming the file and line; what can be kept is
kept and counted in the report, so that ``retina-check-data`` warns about it and loading
repairs it (zero-area boxes dropped, boxes partly outside clipped).

YOLO's ``class cx cy w h`` are normalised by the image's width and height: COCO's
``x = (cx - w / 2) * W``, ``w = w * W``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retina.data.convert_common import (
    ConversionReport,
    coco_annotation,
    coco_box,
    index_by_stem,
    read_text_file,
    relative_name,
)
from retina.data.images import IMAGE_SUFFIXES, image_size
from retina.errors import DataError
from retina.utils.io import non_regular_kind

__all__ = [
    "COCO80_TO_91",
    "COCO_NAMES",
    "check_class_names",
    "check_coco_names",
    "convert_yolo",
    "load_yolo_names",
]

COCO80_TO_91 = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27,
    28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
    54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80,
    81, 82, 84, 85, 86, 87, 88, 89, 90,
)  # fmt: skip
"""COCO category id of each of the 80 YOLO class indices."""

COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
"""COCO's category names in YOLO index order."""


def _names_from_mapping(names: dict, path: Path) -> list[Any]:
    """``{index: name}`` (keys integers or digit strings, as YAML may give both) -> names."""
    by_index: dict[int, Any] = {}
    for key, name in names.items():
        index = key if isinstance(key, int) and not isinstance(key, bool) else \
            int(key) if isinstance(key, str) and key.strip().isdecimal() else None
        if index is None or index in by_index:
            what = "is not an index" if index is None else "repeats an index"
            raise DataError(f"{path}: names key {key!r} {what} (names must map the indices "
                            f"0..{len(names) - 1} to class names)")
        by_index[index] = name
    if sorted(by_index) != list(range(len(by_index))):
        raise DataError(f"{path}: names must map the indices 0..{len(names) - 1}, got keys "
                        f"{sorted(by_index)}")
    return [by_index[i] for i in range(len(by_index))]


def check_class_names(names: Sequence[str], source: str) -> list[str]:
    """``names`` stripped, or :class:`DataError` naming ``source`` when one is empty or
    repeated (two indices of one name would merge into one category)."""
    out = [str(n).strip() for n in names]
    first: dict[str, int] = {}
    for i, name in enumerate(out):
        if not name:
            raise DataError(f"{source}: class {i} has an empty name")
        if name in first:
            raise DataError(f"{source}: class name {name!r} is used by indices {first[name]} "
                            f"and {i}; names must be distinct")
        first[name] = i
    return out


def load_yolo_names(path: str | Path) -> list[str]:
    """Class names by index from an ultralytics ``data.yaml`` (``names:`` list or
    ``{index: name}`` mapping) or a text file with one name per line (a UTF-8 byte order
    mark is dropped). Empty, repeated or non-text names are errors."""
    import yaml

    path = Path(path)
    text = read_text_file(path, "names file")
    if path.suffix.lower() not in (".yaml", ".yml"):
        lines = text.splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                raise DataError(f"{path}:{number}: empty class name")
        if not lines:
            raise DataError(f"{path}: no class names")
        return check_class_names(lines, str(path))
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: malformed YAML ({str(exc).splitlines()[0]})") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        names = _names_from_mapping(names, path)
    if not isinstance(names, list) or not names:
        raise DataError(f"{path}: needs 'names:' as a non-empty list or an index->name mapping")
    count = data.get("nc", len(names))
    if count != len(names) or isinstance(count, bool):
        raise DataError(f"{path}: nc: {count!r} but names lists {len(names)} classes")
    for i, name in enumerate(names):
        if isinstance(name, bool) or not isinstance(name, (str, int)):
            hint = " (YAML reads yes/no/on/off/true/false as booleans: quote it)" \
                if isinstance(name, bool) else ""
            raise DataError(f"{path}: names[{i}] must be a name, got {name!r}{hint}")
    return check_class_names(names, str(path))


_COCO_ALIASES = {"motorbike": "motorcycle", "aeroplane": "airplane", "sofa": "couch",
                 "tvmonitor": "tv", "hairdryer": "hairdrier"}
"""darknet's ``coco.names`` spellings of COCO's classes (compared without spaces)."""


def _coco_key(name: str) -> str:
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    return _COCO_ALIASES.get(key, key)


def check_coco_names(names: Sequence[str], source: str = "the names list") -> None:
    """:class:`DataError` unless ``names`` are COCO's 80 classes in YOLO's index order
    (:data:`COCO_NAMES`; case, spaces and darknet's spellings such as ``motorbike`` aside),
    naming the first index that differs."""
    if len(names) != len(COCO_NAMES):
        raise DataError(f"--coco-ids needs the 80 COCO classes, {source} has {len(names)}")
    for i, (name, coco) in enumerate(zip(names, COCO_NAMES, strict=True)):
        if _coco_key(name) != _coco_key(coco):
            raise DataError(f"--coco-ids needs COCO's classes in COCO's order: {source} has "
                            f"{name!r} at index {i}, where COCO has {coco!r}")


def _parse_yolo_line(line: str, where: str, num_classes: int
                     ) -> tuple[int, float, float, float, float]:
    parts = line.split()
    if len(parts) != 5:
        raise DataError(f"{where}: expected 'class cx cy w h', got {line.strip()!r}")
    try:
        cls = int(parts[0])
        cx, cy, w, h = (float(v) for v in parts[1:])
    except ValueError:
        raise DataError(f"{where}: expected 'class cx cy w h' (an integer class and four "
                        f"numbers), got {line.strip()!r}") from None
    if not all(math.isfinite(v) for v in (cx, cy, w, h)):
        raise DataError(f"{where}: non-finite value in {line.strip()!r}")
    if not 0 <= cls < num_classes:
        raise DataError(f"{where}: class index {cls} out of range (the names file has "
                        f"{num_classes} classes: 0..{num_classes - 1})")
    if w < 0 or h < 0 or max(abs(cx), abs(cy), w, h) > 1.5:
        raise DataError(f"{where}: cx cy w h must be normalised to [0, 1], got "
                        f"{line.strip()!r}")
    return cls, cx, cy, w, h


def convert_yolo(label_dir: str | Path, image_dir: str | Path, names: Sequence[str], *,
                 coco_ids: bool = False) -> tuple[dict[str, Any], ConversionReport]:
    """ultralytics YOLO labels (``class cx cy w h`` normalised, ``<stem>.txt`` per image) ->
    a COCO dict and a report.

    Args:
        label_dir: folder of the label files.
        image_dir: folder of the images (suffixes :data:`IMAGE_SUFFIXES`); an image without
            a label file has no objects. ``file_name`` is relative to it. A label file
            without an image is skipped and reported (``classes.txt`` is a names file).
        names: class name of each index (see :func:`load_yolo_names`).
        coco_ids: the 80 indices are COCO's: category ids 1..90 and COCO's names.
    """
    label_dir, image_dir = Path(label_dir), Path(image_dir)
    for folder, what in ((label_dir, "label"), (image_dir, "image")):
        if not folder.is_dir():
            raise DataError(f"{folder}: {what} folder not found")
    names = check_class_names(names, "the names list")
    if coco_ids:
        check_coco_names(names)
        cat_ids, cat_names = list(COCO80_TO_91), list(COCO_NAMES)
    else:
        cat_ids, cat_names = list(range(1, len(names) + 1)), names
    image_paths = sorted(p for p in image_dir.iterdir()
                         if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not image_paths:
        raise DataError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    by_stem: dict[str, Path] = {}
    for path in image_paths:
        if path.stem in by_stem:
            raise DataError(f"{path}: shares its stem with {by_stem[path.stem].name}, so the "
                            f"label file {path.stem}.txt would be ambiguous")
        by_stem[path.stem] = path
    report = ConversionReport()
    labels = index_by_stem(label_dir, (".txt",), files_only=False)
    for stem, found in sorted(labels.items()):
        if len(found) > 1 and stem in by_stem:
            raise DataError(f"{label_dir}: {' and '.join(found)} both label {by_stem[stem].name}")
        if stem not in by_stem and stem.lower() != "classes":  # LabelImg's names file
            report.add("stray", found[0])

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    counts = [0] * len(names)
    for image_id, path in enumerate(image_paths, start=1):
        size = image_size(path)
        images.append({"id": image_id, "file_name": relative_name(path, image_dir),
                       "width": size[0], "height": size[1]})
        if path.stem not in labels:
            report.add("no_labels", path.name)
            continue
        label = label_dir / labels[path.stem][0]
        kind = non_regular_kind(label) or ("a broken symbolic link" if not label.exists()
                                           else None)
        if kind is not None:
            raise DataError(f"{label}: label file is {kind}, not a regular file")
        try:
            lines = label.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{label}: cannot read label file ({exc})") from None
        seen: set[tuple] = set()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{label}:{number}"
            row = _parse_yolo_line(line, where, len(names))
            if row in seen:
                report.add("duplicate", f"{label.name}:{number}")
                continue
            seen.add(row)
            cls, cx, cy, w, h = row
            W, H = size
            box = coco_box((cx - w / 2) * W, (cy - h / 2) * H, w * W, h * H, size,
                            f"{label.name}:{number}", report)
            annotations.append(coco_annotation(len(annotations) + 1, image_id, cat_ids[cls], box,
                                           False))
            counts[cls] += 1
    report.images = len(images)
    report.boxes_per_class = dict(zip(cat_names, counts, strict=True))
    categories = [{"id": i, "name": n} for i, n in zip(cat_ids, cat_names, strict=True)]
    return {"images": images, "annotations": annotations, "categories": categories}, report

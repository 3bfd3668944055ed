"""Pascal VOC and YOLO annotations -> a COCO dict (``retina-convert-data``).

Both converters are pure: they read the annotation and image headers (never decode an image)
and return ``(coco_dict, ConversionReport)``. Unusable input raises
:class:`~retina.errors.DataError` with one line naming the file (and line); what can be
kept is kept and counted in the report, so that ``retina-check-data`` warns about it and
loading repairs it (zero-area boxes dropped, boxes partly outside clipped).

Box conventions (COCO ``bbox`` is ``[x, y, w, h]`` in pixels, origin at the top-left corner
of the top-left pixel):

- VOC corners are 1-based and inclusive, as in detectron2's VOC loader:
  ``x = xmin - 1, y = ymin - 1, x2 = xmax, y2 = ymax`` (so ``w = xmax - xmin + 1``). A box
  whose corners coincide or are inverted (``xmax <= xmin`` or ``ymax <= ymin``) marks no
  area as drawn and is written with zero width (height).
- YOLO ``class cx cy w h`` are normalised by the image's width and height:
  ``x = (cx - w / 2) * W``, ``w = w * W``.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retina.data.columns import BOX_TOLERANCE
from retina.data.images import IMAGE_SUFFIXES, image_size
from retina.errors import DataError

__all__ = [
    "COCO80_TO_91",
    "COCO_NAMES",
    "ConversionReport",
    "convert_voc",
    "convert_yolo",
    "load_yolo_names",
    "read_split_file",
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

_NOTES = {
    "filename": "images found by the XML's name (<filename> missing or not found)",
    "size": "image sizes taken from the image file (<size> missing, zero or different)",
    "zero_area": "zero-area boxes kept (retina-check-data warns; loading drops them)",
    "outside": "boxes partly outside their image kept (loading clips them)",
    "difficult": "difficult objects written as iscrowd=1 (ignored in training and evaluation)",
    "no_labels": "images without a label file (no objects)",
    "stray": "label files without an image skipped",
    "duplicate": "duplicate label lines dropped",
}


@dataclass
class ConversionReport:
    """What a conversion wrote and what it fixed or skipped.

    ``notes`` maps a kind (a key of the module's ``_NOTES``: ``filename``, ``size``, ``zero_area``,
    ``outside``, ``difficult``, ``no_labels``, ``stray``, ``duplicate``) to the locations
    (``file`` or ``file:line``) where it occurred.
    """

    images: int = 0
    boxes_per_class: dict[str, int] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, where: str) -> None:
        """Count one occurrence of ``kind`` at ``where``."""
        if kind not in _NOTES:
            raise KeyError(kind)
        self.notes.setdefault(kind, []).append(where)

    def count(self, kind: str) -> int:
        """Occurrences of ``kind``."""
        return len(self.notes.get(kind, ()))

    @property
    def boxes(self) -> int:
        """Annotations written, crowd (difficult) ones included."""
        return sum(self.boxes_per_class.values())

    def lines(self) -> list[str]:
        """The report as printable lines."""
        per_class = ", ".join(f"{name} {n}" for name, n in self.boxes_per_class.items())
        out = [f"{self.images} images, {self.boxes} boxes ({per_class or 'none'})"]
        for kind, text in _NOTES.items():
            where = self.notes.get(kind)
            if where:
                more = ", ..." if len(where) > 3 else ""
                out.append(f"{len(where)} {text}: {', '.join(where[:3])}{more}")
        return out


def _coco_box(x: float, y: float, w: float, h: float, size: tuple[int, int], where: str,
              report: ConversionReport) -> list[float]:
    """``[x, y, w, h]`` rounded to 2 decimals; notes a zero-area or partly outside box."""
    box = [round(v, 2) for v in (x, y, w, h)]
    if box[2] <= 0 or box[3] <= 0:
        report.add("zero_area", where)
    elif (box[0] < -BOX_TOLERANCE or box[1] < -BOX_TOLERANCE
          or box[0] + box[2] > size[0] + BOX_TOLERANCE
          or box[1] + box[3] > size[1] + BOX_TOLERANCE):
        report.add("outside", where)
    return box


def _annotation(ann_id: int, image_id: int, cat_id: int, box: list[float],
                crowd: bool) -> dict[str, Any]:
    return {"id": ann_id, "image_id": image_id, "category_id": cat_id, "bbox": box,
            "area": round(max(box[2], 0.0) * max(box[3], 0.0), 2), "iscrowd": int(crowd)}


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


# ---------------------------------------------------------------------------------- VOC
def read_split_file(path: str | Path) -> list[str]:
    """Image ids of a VOC ``ImageSets/Main/*.txt`` list (first word of each non-blank line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read split file ({exc})") from None
    ids = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{path}: split file lists no image")
    return ids


def _voc_number(obj: ET.Element, key: str, xml: Path, index: int) -> float:
    text = obj.findtext(f"bndbox/{key}")
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        name = (obj.findtext("name") or "").strip()
        raise DataError(f"{xml}: object {index} ({name}): bndbox needs a number <{key}>, got "
                        f"{text!r}")
    return value


def _voc_image(root: ET.Element, xml: Path, image_dir: Path, report: ConversionReport
               ) -> Path:
    """The image of a VOC record: ``<filename>`` in ``image_dir`` (with an image suffix
    added when it has none), else the XML's stem with an image suffix (noted)."""
    name = (root.findtext("filename") or "").strip()
    suffixes = IMAGE_SUFFIXES + tuple(e.upper() for e in IMAGE_SUFFIXES)
    for stem, noted in ((name, False), (xml.stem, True)):
        if not stem:
            continue
        candidates = [image_dir / stem] if not noted else []
        candidates += [image_dir / f"{stem}{ext}" for ext in suffixes]
        for candidate in candidates:
            if candidate.is_file():
                if noted:
                    report.add("filename", xml.name)
                return candidate
    raise DataError(f"{xml}: image {name or xml.stem!r} not found in {image_dir}")


def _voc_size(root: ET.Element) -> tuple[int, int] | None:
    try:
        w, h = int(float(root.findtext("size/width"))), int(float(root.findtext("size/height")))
    except (TypeError, ValueError):
        return None
    return (w, h) if w > 0 and h > 0 else None


def _parse_xml(xml: Path) -> ET.Element:
    try:
        return ET.parse(xml).getroot()
    except ET.ParseError as exc:
        raise DataError(f"{xml}: malformed XML ({exc})") from None
    except OSError as exc:
        raise DataError(f"{xml}: cannot read annotation file ({exc.strerror or exc})") from None


def convert_voc(ann_dir: str | Path, image_dir: str | Path, *,
                split_file: str | Path | None = None, classes: Sequence[str] | None = None,
                keep_difficult: bool = False) -> tuple[dict[str, Any], ConversionReport]:
    """Pascal VOC XML (one file per image) -> a COCO dict and a report.

    Args:
        ann_dir: folder of the XML files (``Annotations/``, or the image folder when flat).
        image_dir: folder of the images; ``file_name`` is relative to it.
        split_file: an ``ImageSets/Main/*.txt`` list: only those ids (``<id>.xml``), in order.
            Without it every ``*.xml`` of ``ann_dir``, sorted by name.
        classes: class names giving category ids 1..K in this order; an object of another
            name is an error. Without it, the sorted names found.
        keep_difficult: keep ``<difficult>1`` objects as ordinary boxes instead of
            ``iscrowd: 1``.
    """
    ann_dir, image_dir = Path(ann_dir), Path(image_dir)
    if not ann_dir.is_dir():
        raise DataError(f"{ann_dir}: annotation folder not found")
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder not found")
    if split_file is not None:
        xmls = [ann_dir / f"{image_id}.xml" for image_id in read_split_file(split_file)]
        for xml in xmls:
            if not xml.is_file():
                raise DataError(f"{split_file}: lists {xml.stem}, but {xml} does not exist")
    else:
        xmls = sorted(ann_dir.glob("*.xml"))
        if not xmls:
            raise DataError(f"{ann_dir}: no .xml annotation file")
    if classes is not None:
        classes = [c.strip() for c in classes]
        if not all(classes) or len(set(classes)) != len(classes):
            raise DataError(f"--classes must be distinct non-empty names, got {classes}")

    report = ConversionReport()
    images: list[dict[str, Any]] = []
    objects: list[tuple[int, str, list[float], bool]] = []  # image id, class, box, crowd
    seen_files: dict[str, Path] = {}
    for image_id, xml in enumerate(xmls, start=1):
        root = _parse_xml(xml)
        path = _voc_image(root, xml, image_dir, report)
        file_name = _relative(path, image_dir)
        if file_name in seen_files:
            raise DataError(f"{xml}: image {file_name} is already annotated by "
                            f"{seen_files[file_name]}")
        seen_files[file_name] = xml
        size = image_size(path)
        if _voc_size(root) != size:
            report.add("size", xml.name)
        images.append({"id": image_id, "file_name": file_name, "width": size[0],
                       "height": size[1]})
        for index, obj in enumerate(root.iter("object")):
            name = (obj.findtext("name") or "").strip()
            if not name:
                raise DataError(f"{xml}: object {index} has no <name>")
            if classes is not None and name not in classes:
                raise DataError(f"{xml}: object {index}: unknown class {name!r} (--classes: "
                                f"{', '.join(classes)})")
            xmin, ymin, xmax, ymax = (_voc_number(obj, k, xml, index)
                                      for k in ("xmin", "ymin", "xmax", "ymax"))
            w = xmax - xmin + 1 if xmax > xmin else 0.0
            h = ymax - ymin + 1 if ymax > ymin else 0.0
            box = _coco_box(xmin - 1, ymin - 1, w, h, size, f"{xml.name} object {index}", report)
            difficult = (obj.findtext("difficult") or "0").strip() not in ("0", "", "false")
            if difficult:
                report.add("difficult", f"{xml.name} object {index}")
            objects.append((image_id, name, box, difficult and not keep_difficult))

    names = list(classes) if classes is not None else sorted({o[1] for o in objects})
    cat_of = {name: i for i, name in enumerate(names, start=1)}
    annotations = [_annotation(ann_id, image_id, cat_of[name], box, crowd)
                   for ann_id, (image_id, name, box, crowd) in enumerate(objects, start=1)]
    report.images = len(images)
    report.boxes_per_class = {name: sum(o[1] == name for o in objects) for name in names}
    categories = [{"id": i, "name": name} for name, i in cat_of.items()]
    return {"images": images, "annotations": annotations, "categories": categories}, report


# ---------------------------------------------------------------------------------- YOLO
def load_yolo_names(path: str | Path) -> list[str]:
    """Class names by index from an ultralytics ``data.yaml`` (``names:`` list or
    ``{index: name}`` mapping) or a text file with one name per line."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read names file ({exc})") from None
    if path.suffix.lower() not in (".yaml", ".yml"):
        lines = text.splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                raise DataError(f"{path}:{number}: empty class name")
        if not lines:
            raise DataError(f"{path}: no class names")
        return [line.strip() for line in lines]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: malformed YAML ({str(exc).splitlines()[0]})") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise DataError(f"{path}: names must map the indices 0..{len(names) - 1}, got keys "
                            f"{sorted(names, key=str)}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names or not all(
            isinstance(n, (str, int)) and str(n).strip() for n in names):
        raise DataError(f"{path}: needs 'names:' as a non-empty list or an index->name mapping")
    return [str(n).strip() for n in names]


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
    names = list(names)
    if coco_ids:
        if len(names) != len(COCO80_TO_91):
            raise DataError(f"--coco-ids needs the 80 COCO classes, the names file has "
                            f"{len(names)}")
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
    for label in sorted(label_dir.glob("*.txt")):
        if label.stem not in by_stem and label.name != "classes.txt":  # LabelImg's names
            report.add("stray", label.name)

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    counts = [0] * len(names)
    for image_id, path in enumerate(image_paths, start=1):
        size = image_size(path)
        images.append({"id": image_id, "file_name": _relative(path, image_dir),
                       "width": size[0], "height": size[1]})
        label = label_dir / f"{path.stem}.txt"
        if not label.is_file():
            report.add("no_labels", path.name)
            continue
        try:
            lines = label.read_text(encoding="utf-8").splitlines()
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
            box = _coco_box((cx - w / 2) * W, (cy - h / 2) * H, w * W, h * H, size,
                            f"{label.name}:{number}", report)
            annotations.append(_annotation(len(annotations) + 1, image_id, cat_ids[cls], box,
                                           False))
            counts[cls] += 1
    report.images = len(images)
    report.boxes_per_class = dict(zip(cat_names, counts, strict=True))
    categories = [{"id": i, "name": n} for i, n in zip(cat_ids, cat_names, strict=True)]
    return {"images": images, "annotations": annotations, "categories": categories}, report

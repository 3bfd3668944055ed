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
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.parsers import expat

from retina.data.columns import BOX_TOLERANCE
from retina.data.images import (
    IMAGE_SUFFIXES,
    SWAPS_AXES,
    image_header,
    image_size,
    upright_box,
)
from retina.errors import DataError
from retina.utils.io import non_regular_kind, require_regular_file

__all__ = [
    "COCO80_TO_91",
    "COCO_NAMES",
    "EXIF_FRAMES",
    "ConversionReport",
    "check_class_names",
    "check_coco_names",
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
    "filename": "images taken from the XML's name, whose <filename> names another file",
    "by_filename": "images found by <filename> (none is named after the XML)",
    "size": "image sizes taken from the image file (<size> missing, zero or different)",
    "rotated": "images with an EXIF orientation whose <size> and boxes are in the stored "
               "frame: boxes turned upright with the image",
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

    ``notes`` maps a kind (a key of the module's ``_NOTES``: ``filename``, ``by_filename``,
    ``size``, ``rotated``, ``zero_area``, ``outside``, ``difficult``, ``no_labels``, ``stray``,
    ``duplicate``) to the locations (``file`` or ``file:line``) where it occurred.
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
    """``[x, y, w, h]`` rounded to 2 decimals; notes a zero-area or partly outside box.
    Coordinates whose area overflows (``1e308``) are no box: :class:`DataError`."""
    box = [round(v, 2) for v in (x, y, w, h)]
    if not all(math.isfinite(v) for v in (*box, box[0] + box[2], box[1] + box[3],
                                          box[2] * box[3])):
        raise DataError(f"{where}: box [x, y, w, h] = {box} is beyond any image")
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
        text = require_regular_file(path, "split file", DataError).read_text(
            encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read split file ({exc})") from None
    ids = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{path}: split file lists no image")
    return ids


class _Node(ET.Element):
    """An XML element that knows the line it starts on."""

    line: int = 0


def _parse_xml(xml: Path) -> _Node:
    """The root of an annotation file; every element carries its ``line``.

    Namespaces are dropped: a default namespace (``<annotation xmlns="...">``) is a plain
    attribute and a prefix (``<voc:object>``) is cut, so the tags are VOC's own names.
    """
    kind = non_regular_kind(xml)
    if kind is not None:
        raise DataError(f"{xml}: annotation file is {kind}, not a regular file")
    builder = ET.TreeBuilder(element_factory=_Node)
    parser = expat.ParserCreate()  # no namespace processing: xmlns="..." is an attribute

    def start(tag: str, attrs: dict[str, str]) -> None:
        builder.start(tag.rpartition(":")[2], attrs).line = parser.CurrentLineNumber

    parser.StartElementHandler = start
    parser.EndElementHandler = lambda tag: builder.end(tag.rpartition(":")[2])
    parser.CharacterDataHandler = builder.data
    try:
        with open(xml, "rb") as handle:
            parser.ParseFile(handle)
        return builder.close()
    except expat.ExpatError as exc:
        raise DataError(f"{xml}: malformed XML ({exc})") from None
    except OSError as exc:
        raise DataError(f"{xml}: cannot read annotation file ({exc.strerror or exc})") from None


def _where(xml: Path, element: ET.Element | None) -> str:
    """``file:line`` of ``element`` (the file alone when it has no line)."""
    line = getattr(element, "line", 0)
    return f"{xml}:{line}" if line else str(xml)


def _voc_number(obj: ET.Element, key: str, xml: Path, index: int) -> float:
    element = obj.find(f"bndbox/{key}")
    text = element.text if element is not None else None
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        name = (obj.findtext("name") or "").strip()
        raise DataError(f"{_where(xml, element if element is not None else obj)}: object "
                        f"{index} ({name}): bndbox needs a number <{key}>, got {text!r}")
    return value


_TRUE_WORDS, _FALSE_WORDS = ("true", "yes", "y", "on"), ("false", "no", "n", "off", "")


def _voc_flag(obj: ET.Element, key: str, xml: Path, index: int) -> bool:
    """A VOC boolean such as ``<difficult>``: 0/1 (as any number), true/false, yes/no, on/off
    (any case); absent or empty is false. Anything else is an error naming ``file:line``."""
    element = obj.find(key)
    if element is None:
        return False
    text = (element.text or "").strip()
    word = text.lower()
    if word in _TRUE_WORDS or word in _FALSE_WORDS:
        return word in _TRUE_WORDS
    try:
        number = float(word)
    except ValueError:
        number = math.nan
    if number not in (0.0, 1.0):
        raise DataError(f"{_where(xml, element)}: object {index}: <{key}> must be 0 or 1 "
                        f"(or true/false, yes/no), got {text!r}")
    return number == 1.0


def _index_by_stem(folder: Path, suffixes: Sequence[str], files_only: bool = True
                   ) -> dict[str, list[str]]:
    """Stem -> sorted names of the entries of ``folder`` with one of ``suffixes`` (any case:
    ``a.JPG``, ``b.TXT``); regular files (symlinks followed) only, unless ``files_only`` is
    False."""
    index: dict[str, list[str]] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                path = Path(entry.name)
                if path.suffix.lower() in suffixes and (not files_only or _is_file(entry)):
                    index.setdefault(path.stem, []).append(entry.name)
    except OSError as exc:
        raise DataError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from None
    return {stem: sorted(names) for stem, names in index.items()}


def _is_file(entry: os.DirEntry) -> bool:
    """A regular file (symlinks followed); False for a symlink loop or a vanished entry."""
    try:
        return entry.is_file()
    except OSError:
        return False


def _last_part(name: str) -> str:
    """The file name at the end of a POSIX or Windows path (``C:\\data\\a.jpg`` -> ``a.jpg``)."""
    return Path(name.replace("\\", "/")).name


def _voc_fallback(name: str, xml: Path, image_dir: Path) -> Path | None:
    """The image ``<filename>`` names inside ``image_dir`` (an absolute, ``..`` or Windows
    path by its last component; an image suffix added when it has none), else None."""
    named = Path(name)
    if named.is_absolute() or ".." in named.parts or "\\" in name:
        named = Path(_last_part(name))
    if not named.name or named.name in (".", ".."):
        return None
    candidates = [image_dir / named]
    if named.suffix.lower() not in IMAGE_SUFFIXES:
        candidates += [image_dir / f"{named}{ext}" for ext in IMAGE_SUFFIXES]
    return next((c for c in candidates if c.is_file()), None)


def _voc_image(root: ET.Element, xml: Path, image_dir: Path, index: dict[str, list[str]],
               report: ConversionReport) -> Path:
    """The image of a VOC record: the one named after the XML's stem (the record's id, as
    detectron2 and torchvision take it); ``<filename>`` only picks among several such images,
    or is the fallback when there is none (both noted when they disagree)."""
    name = (root.findtext("filename") or "").strip()
    named = _last_part(name)
    stems = index.get(xml.stem, [])
    if stems:
        chosen = stems if len(stems) == 1 else [s for s in stems if s == named]
        if len(chosen) != 1:
            raise DataError(f"{xml}: several images are named {xml.stem} ({', '.join(stems)}) "
                            f"and <filename> {name!r} does not pick one")
        if name and named not in (chosen[0], xml.stem):
            report.add("filename", f"{xml.name} names {name}")
        return image_dir / chosen[0]
    path = _voc_fallback(name, xml, image_dir) if name else None
    if path is None:
        named_too = f" nor <filename> {name!r}" if name else ""
        raise DataError(f"{xml}: no image named {xml.stem} (an image suffix) in {image_dir},"
                        f"{named_too}")
    report.add("by_filename", f"{xml.name} -> {_relative(path, image_dir)}")
    return path


def _voc_size(root: ET.Element) -> tuple[int, int] | None:
    try:
        w, h = int(float(root.findtext("size/width"))), int(float(root.findtext("size/height")))
    except (TypeError, ValueError, OverflowError):
        return None
    return (w, h) if w > 0 and h > 0 else None


EXIF_FRAMES = ("stored", "upright")
"""``exif_frame`` values of :func:`convert_voc`: the frame the boxes of an EXIF-oriented
image were drawn in."""


def _voc_frame(path: Path, declared: tuple[int, int] | None, xml: Path,
               exif_frame: str | None) -> tuple[tuple[int, int], int, bool]:
    """``(upright size, orientation, rotate)``: whether the record's boxes were drawn on the
    stored pixels of an EXIF-oriented image and must be turned upright with it.

    Without ``exif_frame`` the ``<size>`` decides: the stored frame's size means stored
    boxes, the upright one upright boxes; when it cannot tell (missing, another size, or both
    frames the same size: orientations 2-4 and square images) the record is refused.
    """
    stored, orientation = image_header(path)
    upright = (stored[1], stored[0]) if orientation in SWAPS_AXES else stored
    if orientation == 1:
        return upright, orientation, False
    if exif_frame is not None:
        return upright, orientation, exif_frame == "stored"
    if stored != upright and declared in (stored, upright):
        return upright, orientation, declared == stored
    said = f"{declared[0]}x{declared[1]}" if declared else "missing"
    raise DataError(
        f"{xml}: {path.name} has EXIF orientation {orientation} (stored {stored[0]}x{stored[1]},"
        f" shown upright {upright[0]}x{upright[1]}) and <size> ({said}) cannot tell which frame"
        f" the boxes were drawn in: pass --exif-frame stored (on the stored pixels, as "
        f"LabelImg draws) or --exif-frame upright (as a photo viewer shows the image)")


def convert_voc(ann_dir: str | Path, image_dir: str | Path, *,
                split_file: str | Path | None = None, classes: Sequence[str] | None = None,
                keep_difficult: bool = False, exif_frame: str | None = None
                ) -> tuple[dict[str, Any], ConversionReport]:
    """Pascal VOC XML (one file per image) -> a COCO dict and a report.

    The image of ``<id>.xml`` is ``<id>.<image suffix>`` in ``image_dir`` (``<filename>`` is
    a fallback, noted when it disagrees). Boxes end up in the upright frame that
    :func:`~retina.data.images.read_image` gives: those drawn on the stored pixels of an
    EXIF-oriented image are turned with it (noted; see ``exif_frame``).

    Args:
        ann_dir: folder of the XML files (``Annotations/``, or the image folder when flat).
        image_dir: folder of the images; ``file_name`` is relative to it.
        split_file: an ``ImageSets/Main/*.txt`` list: only those ids (``<id>.xml``), in order.
            Without it every ``*.xml`` of ``ann_dir``, sorted by name.
        classes: class names giving category ids 1..K in this order; an object of another
            name is an error. Without it, the sorted names found.
        keep_difficult: keep ``<difficult>1`` objects as ordinary boxes instead of
            ``iscrowd: 1``.
        exif_frame: for images with an EXIF orientation, the frame their boxes were drawn
            in (``"stored"`` or ``"upright"``); None: decided by each ``<size>``, and a record
            it cannot decide is an error.
    """
    ann_dir, image_dir = Path(ann_dir), Path(image_dir)
    if not ann_dir.is_dir():
        raise DataError(f"{ann_dir}: annotation folder not found")
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder not found")
    if exif_frame not in (None, *EXIF_FRAMES):
        raise DataError(f"--exif-frame must be one of {', '.join(EXIF_FRAMES)}, got "
                        f"{exif_frame!r}")
    if split_file is not None:
        xmls = [ann_dir / f"{image_id}.xml" for image_id in read_split_file(split_file)]
        for xml in xmls:
            if not xml.is_file():
                raise DataError(f"{split_file}: lists {xml.stem}, but {xml} does not exist")
    else:
        xmls = sorted(ann_dir / n for names in _index_by_stem(ann_dir, (".xml",), False).values()
                      for n in names)
        if not xmls:
            raise DataError(f"{ann_dir}: no .xml annotation file")
    if classes is not None:
        classes = [c.strip() for c in classes]
        if not all(classes) or len(set(classes)) != len(classes):
            raise DataError(f"--classes must be distinct non-empty names, got {classes}")

    report = ConversionReport()
    index = _index_by_stem(image_dir, IMAGE_SUFFIXES)
    images: list[dict[str, Any]] = []
    objects: list[tuple[int, str, list[float], bool]] = []  # image id, class, box, crowd
    seen_files: dict[str, Path] = {}
    for image_id, xml in enumerate(xmls, start=1):
        root = _parse_xml(xml)
        path = _voc_image(root, xml, image_dir, index, report)
        file_name = _relative(path, image_dir)
        if file_name in seen_files:
            raise DataError(f"{xml}: image {file_name} is already annotated by "
                            f"{seen_files[file_name]}")
        seen_files[file_name] = xml
        declared = _voc_size(root)
        size, orientation, rotate = _voc_frame(path, declared, xml, exif_frame)
        if rotate:
            report.add("rotated", f"{xml.name} (orientation {orientation})")
        elif declared != size:
            report.add("size", xml.name)
        images.append({"id": image_id, "file_name": file_name, "width": size[0],
                       "height": size[1]})
        turn = orientation if rotate else 1
        for number, obj in enumerate(root.iter("object")):
            objects.append((image_id, *_voc_object(obj, xml, number, size, turn, classes,
                                                   report, keep_difficult)))

    names = list(classes) if classes is not None else sorted({o[1] for o in objects})
    cat_of = {name: i for i, name in enumerate(names, start=1)}
    annotations = [_annotation(ann_id, image_id, cat_of[name], box, crowd)
                   for ann_id, (image_id, name, box, crowd) in enumerate(objects, start=1)]
    report.images = len(images)
    report.boxes_per_class = {name: sum(o[1] == name for o in objects) for name in names}
    categories = [{"id": i, "name": name} for name, i in cat_of.items()]
    return {"images": images, "annotations": annotations, "categories": categories}, report


def _voc_object(obj: ET.Element, xml: Path, index: int, size: tuple[int, int],
                orientation: int, classes: Sequence[str] | None, report: ConversionReport,
                keep_difficult: bool) -> tuple[str, list[float], bool]:
    """``(class name, COCO box, crowd)`` of one ``<object>``; a box drawn on the stored pixels
    is turned upright by EXIF ``orientation`` (``size`` is the upright one)."""
    name = (obj.findtext("name") or "").strip()
    if not name:
        raise DataError(f"{_where(xml, obj)}: object {index} has no <name>")
    if classes is not None and name not in classes:
        raise DataError(f"{_where(xml, obj)}: object {index}: unknown class {name!r} "
                        f"(--classes: {', '.join(classes)})")
    xmin, ymin, xmax, ymax = (_voc_number(obj, k, xml, index)
                              for k in ("xmin", "ymin", "xmax", "ymax"))
    w = xmax - xmin + 1 if xmax > xmin else 0.0
    h = ymax - ymin + 1 if ymax > ymin else 0.0
    x1, y1, x2, y2 = xmin - 1, ymin - 1, xmin - 1 + w, ymin - 1 + h
    if orientation != 1:
        stored = (size[1], size[0]) if orientation in SWAPS_AXES else size
        x1, y1, x2, y2 = upright_box((x1, y1, x2, y2), stored, orientation)
    where = f"{xml.name} object {index}"
    box = _coco_box(x1, y1, x2 - x1, y2 - y1, size, where, report)
    difficult = _voc_flag(obj, "difficult", xml, index)
    if difficult:
        report.add("difficult", where)
    return name, box, difficult and not keep_difficult


# ---------------------------------------------------------------------------------- YOLO
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
    try:
        text = require_regular_file(path, "names file", DataError).read_text(
            encoding="utf-8-sig")
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
    labels = _index_by_stem(label_dir, (".txt",), files_only=False)
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
        images.append({"id": image_id, "file_name": _relative(path, image_dir),
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
            box = _coco_box((cx - w / 2) * W, (cy - h / 2) * H, w * W, h * H, size,
                            f"{label.name}:{number}", report)
            annotations.append(_annotation(len(annotations) + 1, image_id, cat_ids[cls], box,
                                           False))
            counts[cls] += 1
    report.images = len(images)
    report.boxes_per_class = dict(zip(cat_names, counts, strict=True))
    categories = [{"id": i, "name": n} for i, n in zip(cat_ids, cat_names, strict=True)]
    return {"images": images, "annotations": annotations, "categories": categories}, report

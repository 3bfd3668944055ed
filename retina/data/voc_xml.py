"""One Pascal VOC XML record: parsed with the line of every element, its ``<size>`` and each
``<object>`` as a class name, a COCO box and a crowd flag (:mod:`retina.data.convert_voc`
finds the records and their images).

VOC corners are 1-based and inclusive, as in detectron2's VOC loader: COCO's
``x = xmin - 1, y = ymin - 1, x2 = xmax, y2 = ymax`` (so ``w = xmax - xmin + 1``). A box whose
corners coincide or are inverted (``xmax <= xmin`` or ``ymax <= ymin``) marks no area as
drawn and is written with zero width (height).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from xml.parsers import expat

from retina.data.convert_common import ConversionReport, coco_box
from retina.data.images import SWAPS_AXES, upright_box
from retina.errors import DataError
from retina.utils.io import non_regular_kind

__all__ = ["parse_voc_xml", "voc_object", "voc_size"]


class _Node(ET.Element):
    """An XML element that knows the line it starts on."""

    line: int = 0


def parse_voc_xml(xml: Path) -> _Node:
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


def voc_size(root: ET.Element) -> tuple[int, int] | None:
    """``(width, height)`` of the record's ``<size>``; None when missing, zero or not a number."""
    try:
        w, h = int(float(root.findtext("size/width"))), int(float(root.findtext("size/height")))
    except (TypeError, ValueError, OverflowError):
        return None
    return (w, h) if w > 0 and h > 0 else None


def voc_object(obj: ET.Element, xml: Path, index: int, size: tuple[int, int],
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
    box = coco_box(x1, y1, x2 - x1, y2 - y1, size, where, report)
    difficult = _voc_flag(obj, "difficult", xml, index)
    if difficult:
        report.add("difficult", where)
    return name, box, difficult and not keep_difficult

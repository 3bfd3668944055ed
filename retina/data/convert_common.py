"""What the VOC and YOLO converters (``retina-convert-data``) share: the
:class:`ConversionReport`, COCO box and annotation records, listing a folder by file stem and
reading a small text file.

COCO ``bbox`` is ``[x, y, w, h]`` in pixels, origin at the top-left corner of the top-left
pixel; :mod:`retina.data.convert_voc` and :mod:`retina.data.convert_yolo` say how their
formats map onto it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retina.data.columns import BOX_TOLERANCE
from retina.errors import DataError
from retina.utils.io import require_regular_file

__all__ = ["ConversionReport", "coco_annotation", "coco_box", "index_by_stem",
           "read_text_file", "relative_name"]

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


def coco_box(x: float, y: float, w: float, h: float, size: tuple[int, int], where: str,
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


def coco_annotation(ann_id: int, image_id: int, cat_id: int, box: list[float],
                    crowd: bool) -> dict[str, Any]:
    """One COCO annotation record; ``area`` is the box's (0 for a zero-area box)."""
    return {"id": ann_id, "image_id": image_id, "category_id": cat_id, "bbox": box,
            "area": round(max(box[2], 0.0) * max(box[3], 0.0), 2), "iscrowd": int(crowd)}


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with ``/`` separators (a COCO ``file_name``)."""
    return path.relative_to(root).as_posix()



def index_by_stem(folder: Path, suffixes: Sequence[str], files_only: bool = True
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


def read_text_file(path: str | Path, what: str) -> str:
    """The text of the regular UTF-8 file ``path`` (a byte order mark dropped), else
    :class:`DataError` naming it as ``what`` (``"split file"``, ``"names file"``)."""
    try:
        return require_regular_file(path, what, DataError).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read {what} ({exc})") from None

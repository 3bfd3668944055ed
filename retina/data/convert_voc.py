"""Pascal VOC annotations -> a COCO dict (``retina-convert-data voc``).

:func:`convert_voc` is pure: it reads the XML files and the image headers (never decodes an
image) and returns ``(coco_dict, ConversionReport)``. Unusable input raises
:class:`~retina.errors.DataError` with one line naming the file (and line); what can be kept
is kept and counted in the report, so that ``retina-check-data`` warns about it and loading
repairs it (zero-area boxes dropped, boxes partly outside clipped).

The box convention and the reading of one XML record are :mod:`retina.data.voc_xml`'s.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retina.data.convert_common import (
    ConversionReport,
    coco_annotation,
    index_by_stem,
    read_text_file,
    relative_name,
)
from retina.data.images import IMAGE_SUFFIXES, SWAPS_AXES, image_header
from retina.data.voc_xml import parse_voc_xml, voc_object, voc_size
from retina.errors import DataError

__all__ = ["EXIF_FRAMES", "convert_voc", "read_split_file"]


def read_split_file(path: str | Path) -> list[str]:
    """Image ids of a VOC ``ImageSets/Main/*.txt`` list (first word of each non-blank line)."""
    path = Path(path)
    text = read_text_file(path, "split file")
    ids = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{path}: split file lists no image")
    return ids


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
    report.add("by_filename", f"{xml.name} -> {relative_name(path, image_dir)}")
    return path


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
        xmls = sorted(ann_dir / n for names in index_by_stem(ann_dir, (".xml",), False).values()
                      for n in names)
        if not xmls:
            raise DataError(f"{ann_dir}: no .xml annotation file")
    if classes is not None:
        classes = [c.strip() for c in classes]
        if not all(classes) or len(set(classes)) != len(classes):
            raise DataError(f"--classes must be distinct non-empty names, got {classes}")

    report = ConversionReport()
    index = index_by_stem(image_dir, IMAGE_SUFFIXES)
    images: list[dict[str, Any]] = []
    objects: list[tuple[int, str, list[float], bool]] = []  # image id, class, box, crowd
    seen_files: dict[str, Path] = {}
    for image_id, xml in enumerate(xmls, start=1):
        root = parse_voc_xml(xml)
        path = _voc_image(root, xml, image_dir, index, report)
        file_name = relative_name(path, image_dir)
        if file_name in seen_files:
            raise DataError(f"{xml}: image {file_name} is already annotated by "
                            f"{seen_files[file_name]}")
        seen_files[file_name] = xml
        declared = voc_size(root)
        size, orientation, rotate = _voc_frame(path, declared, xml, exif_frame)
        if rotate:
            report.add("rotated", f"{xml.name} (orientation {orientation})")
        elif declared != size:
            report.add("size", xml.name)
        images.append({"id": image_id, "file_name": file_name, "width": size[0],
                       "height": size[1]})
        turn = orientation if rotate else 1
        for number, obj in enumerate(root.iter("object")):
            objects.append((image_id, *voc_object(obj, xml, number, size, turn, classes,
                                                  report, keep_difficult)))

    names = list(classes) if classes is not None else sorted({o[1] for o in objects})
    cat_of = {name: i for i, name in enumerate(names, start=1)}
    annotations = [coco_annotation(ann_id, image_id, cat_of[name], box, crowd)
                   for ann_id, (image_id, name, box, crowd) in enumerate(objects, start=1)]
    report.images = len(images)
    report.boxes_per_class = {name: sum(o[1] == name for o in objects) for name in names}
    categories = [{"id": i, "name": name} for name, i in cat_of.items()]
    return {"images": images, "annotations": annotations, "categories": categories}, report

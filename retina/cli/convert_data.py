"""``retina-convert-data``: Pascal VOC or YOLO annotations -> one COCO JSON file.

    retina-convert-data voc ANN_DIR IMAGE_DIR --out OUT.json [--split-file LIST.txt]
                            [--classes a,b,c] [--keep-difficult]
                            [--exif-frame stored|upright]
    retina-convert-data yolo LABEL_DIR IMAGE_DIR --out OUT.json --names data.yaml|names.txt
                             [--coco-ids]

Prints what it wrote, what it fixed or skipped, and the overrides to train on the result.
Unusable input, and an ``--out`` that is not a regular file (a FIFO, a device, a folder,
a symbolic link), exit with status 1 and one line naming the file, before anything is
written (see :mod:`retina.data.convert_voc` and :mod:`retina.data.convert_yolo`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retina.cli import exit_on_interrupt

with exit_on_interrupt("retina-convert-data"):  # Ctrl-C while loading: one line
    from retina.data.convert_common import ConversionReport
    from retina.data.convert_voc import EXIF_FRAMES, convert_voc
    from retina.data.convert_yolo import check_coco_names, convert_yolo, load_yolo_names
    from retina.data.images import IMAGE_SUFFIXES
    from retina.errors import DataError, ResultsError
    from retina.utils.io import require_output_file, write_json_atomic

__all__ = ["main"]

PROG = "retina-convert-data"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Convert Pascal VOC or YOLO "
                                     "annotations to a COCO JSON file.")
    sub = parser.add_subparsers(dest="format", required=True)
    voc = sub.add_parser("voc", help="Pascal VOC XML, one file per image")
    voc.add_argument("ann_dir", help="folder of the .xml files (the image folder when flat)")
    voc.add_argument("image_dir", help="folder of the images; file_name is relative to it")
    voc.add_argument("--split-file", help="ImageSets/Main/*.txt: convert only the ids listed")
    voc.add_argument("--classes", help="comma-separated names: category ids 1..K in this order")
    voc.add_argument("--keep-difficult", action="store_true",
                     help="keep difficult objects as boxes (default: iscrowd=1, ignored)")
    voc.add_argument("--exif-frame", choices=EXIF_FRAMES,
                     help="the frame boxes of EXIF-oriented images were drawn in (default: "
                          "told by <size>; refused where it cannot tell)")
    yolo = sub.add_parser("yolo", help="ultralytics YOLO txt labels, one file per image")
    yolo.add_argument("label_dir", help="folder of the .txt label files")
    yolo.add_argument("image_dir", help="folder of the images; file_name is relative to it")
    yolo.add_argument("--names", required=True, help="data.yaml (names:) or one name per line")
    yolo.add_argument("--coco-ids", action="store_true",
                      help="the 80 classes are COCO's: map them to COCO category ids 1..90")
    for p in (voc, yolo):
        p.add_argument("--out", required=True, help="the COCO JSON file to write")
    return parser


def _check_not_an_input(args: argparse.Namespace, out: Path) -> None:
    """DataError when ``--out`` names one of the files the conversion reads (an annotation,
    label, names, split or image file): the JSON would replace it."""
    folder = args.ann_dir if args.format == "voc" else args.label_dir
    kinds = {folder: (".xml",) if args.format == "voc" else (".txt",),
             args.image_dir: IMAGE_SUFFIXES}
    files = [f for f in (getattr(args, "names", None), getattr(args, "split_file", None)) if f]
    if not out.exists():
        return
    hit = any(out.samefile(f) for f in files if Path(f).exists()) or any(
        out.suffix.lower() in suffixes and out.resolve().parent == Path(d).resolve()
        for d, suffixes in kinds.items())
    if hit:
        raise DataError(f"{out}: --out is one of the input files; nothing written")


def _convert(args: argparse.Namespace) -> tuple[dict[str, Any], ConversionReport]:
    if args.format == "voc":
        classes = args.classes.split(",") if args.classes is not None else None
        return convert_voc(args.ann_dir, args.image_dir, split_file=args.split_file,
                           classes=classes, keep_difficult=args.keep_difficult,
                           exif_frame=args.exif_frame)
    names = load_yolo_names(args.names)
    if args.coco_ids:
        check_coco_names(names, args.names)
    return convert_yolo(args.label_dir, args.image_dir, names, coco_ids=args.coco_ids)


@exit_on_interrupt("retina-convert-data")
def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``retina-convert-data``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        out = require_output_file(args.out, "--out")
        _check_not_an_input(args, out)
        data, report = _convert(args)
        write_json_atomic(out, data)
    except (DataError, ResultsError) as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 1
    root, ann = Path(args.image_dir).resolve(), out.resolve()
    try:
        print(f"wrote {out}: " + "\n".join(report.lines()))
        print("train on it (a second conversion gives the val split):\n"
              f"  retina-train data=coco data.root={root} data.train_images=. "
              f"data.train_ann={ann} data.val_images=. data.val_ann=VAL.json")
        print(f"  retina-check-data {ann} {root}", flush=True)
    except BrokenPipeError:  # `| head`: the JSON is written; the reader wanted less
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

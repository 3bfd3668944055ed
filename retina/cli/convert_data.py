"""``retina-convert-data``: Pascal VOC or YOLO annotations -> one COCO JSON file.

    retina-convert-data voc ANN_DIR IMAGE_DIR --out OUT.json [--split-file LIST.txt]
                            [--classes a,b,c] [--keep-difficult]
    retina-convert-data yolo LABEL_DIR IMAGE_DIR --out OUT.json --names data.yaml|names.txt
                             [--coco-ids]

Prints what it wrote, what it fixed or skipped, and the overrides to train on the result.
Unusable input exits with status 1 and one line naming the file (see
:mod:`retina.data.convert`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retina.cli import exit_on_interrupt

with exit_on_interrupt("retina-convert-data"):  # Ctrl-C while loading: one line
    from retina.data.convert import ConversionReport, convert_voc, convert_yolo, load_yolo_names
    from retina.errors import DataError, ResultsError
    from retina.utils.io import write_json_atomic

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
    yolo = sub.add_parser("yolo", help="ultralytics YOLO txt labels, one file per image")
    yolo.add_argument("label_dir", help="folder of the .txt label files")
    yolo.add_argument("image_dir", help="folder of the images; file_name is relative to it")
    yolo.add_argument("--names", required=True, help="data.yaml (names:) or one name per line")
    yolo.add_argument("--coco-ids", action="store_true",
                      help="the 80 classes are COCO's: map them to COCO category ids 1..90")
    for p in (voc, yolo):
        p.add_argument("--out", required=True, help="the COCO JSON file to write")
    return parser


def _convert(args: argparse.Namespace) -> tuple[dict[str, Any], ConversionReport]:
    if args.format == "voc":
        classes = args.classes.split(",") if args.classes is not None else None
        return convert_voc(args.ann_dir, args.image_dir, split_file=args.split_file,
                           classes=classes, keep_difficult=args.keep_difficult)
    return convert_yolo(args.label_dir, args.image_dir, load_yolo_names(args.names),
                        coco_ids=args.coco_ids)


@exit_on_interrupt("retina-convert-data")
def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``retina-convert-data``; returns the exit status."""
    args = _parser().parse_args(argv)
    out = Path(args.out)
    try:
        data, report = _convert(args)
        write_json_atomic(out, data)
    except (DataError, ResultsError) as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 1
    print(f"wrote {out}: " + "\n".join(report.lines()))
    root = Path(args.image_dir).resolve()
    ann = out.resolve()
    print("train on it (a second conversion gives the val split):\n"
          f"  retina-train data=coco data.root={root} data.train_images=. "
          f"data.train_ann={ann} data.val_images=. data.val_ann=VAL.json")
    print(f"  retina-check-data {ann} {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``retina-check-data``: validate a COCO-format detection dataset.

    retina-check-data ANN_FILE [IMAGE_ROOT] [--no-images] [--strict]

The checks live in :mod:`retina.data.validate`; this module only prints them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from retina.cli import exit_on_interrupt

with exit_on_interrupt("retina-check-data"):  # Ctrl-C while loading: one line
    from retina.data.validate import validate_coco

__all__ = ["main"]


@exit_on_interrupt("retina-check-data")
def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``retina-check-data ANN_FILE [IMAGE_ROOT] [--strict]``: prints
    each problem as ``error: ...`` or ``warning: ...``; exit 1 on errors (and on warnings
    with ``--strict``)."""
    parser = argparse.ArgumentParser(prog="retina-check-data",
                                     description="Validate a COCO-format detection dataset.")
    parser.add_argument("ann_file", help="COCO annotation JSON")
    parser.add_argument("image_root", nargs="?", default=None,
                        help="directory holding the images (omit to check the JSON only)")
    parser.add_argument("--no-images", action="store_true", help="skip opening the images")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 on warnings too (what loading would repair)")
    args = parser.parse_args(argv)
    problems = validate_coco(args.ann_file, args.image_root, check_images=not args.no_images)
    errors = [p for p in problems if p.is_error]
    warnings = [p for p in problems if not p.is_error]
    for problem in errors:
        print(f"error: {problem.message}")
    for problem in warnings:
        print(f"warning: {problem.message}")
    if not problems:
        print(f"{args.ann_file}: no problems found")
        return 0
    if errors:
        verdict = "the data cannot be used"
    elif args.strict:
        verdict = "refused by --strict"
    else:
        verdict = "loading repairs the warnings (data.invalid_boxes=drop)"
    print(f"{len(errors)} error(s), {len(warnings)} warning(s): {verdict}")
    return 1 if errors or args.strict else 0


if __name__ == "__main__":
    raise SystemExit(main())

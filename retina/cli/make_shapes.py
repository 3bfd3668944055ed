"""``retina-make-shapes``: generate the synthetic shapes dataset (COCO JSON + PNG images)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from retina.cli import exit_on_interrupt
from retina.errors import ResultsError
from retina.utils.io import require_output_folder

with exit_on_interrupt("retina-make-shapes"):  # Ctrl-C while loading: one line
    from retina.data.shapes import SHAPE_NAMES, make_shapes_dataset


@exit_on_interrupt("retina-make-shapes")
def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``retina-make-shapes``."""
    parser = argparse.ArgumentParser(prog="retina-make-shapes", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--train", type=int, default=500, help="number of training images")
    parser.add_argument("--val", type=int, default=100, help="number of validation images")
    parser.add_argument("--size", type=int, default=320, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-classes", type=int, default=3,
                        help=f"number of shape categories (1..{len(SHAPE_NAMES)})")
    parser.add_argument("--long-tail", action="store_true", help="20:1 class imbalance")
    parser.add_argument("--max-objects", type=int, default=10, help="objects per image, max")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    parser.add_argument("--max-object-side", type=int, default=None,
                        help="largest object side in pixels (default: half the image side)")
    parser.add_argument("--random-colours", action="store_true",
                        help="random hue per shape: classes differ in shape only")
    parser.add_argument("--distractor-shapes", type=int, default=0,
                        help="up to N unannotated shapes of the kinds that are not classes")
    args = parser.parse_args(argv)
    try:
        require_output_folder(args.out, "--out")
    except ResultsError as exc:
        parser.exit(1, f"retina-make-shapes: error: {exc}\n")
    try:
        out = make_shapes_dataset(args.out, args.train, args.val, args.size, args.seed,
                                  args.num_classes, args.long_tail, args.max_objects, args.workers,
                                  max_object_side=args.max_object_side,
                                  class_colours=not args.random_colours,
                                  distractor_shapes=args.distractor_shapes)
    except (ValueError, OSError) as exc:
        parser.exit(2, f"retina-make-shapes: error: {exc}\n")
    print(f"wrote {args.train} train and {args.val} val images to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

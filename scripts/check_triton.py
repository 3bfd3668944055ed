#!/usr/bin/env python
"""Check the Triton focal-loss kernels against the float64 reference on this GPU.

Compares the forward (summed and elementwise) and backward of every Triton kernel with the
readable reference formulas at the GPU training step's shape (16 images at 800x1333:
3,781,008 anchors x 80 classes) in float32 and bfloat16. Prints one line per dtype; exits 1
when any kernel disagrees, 0 when all agree, and 0 with a "skipped" line without CUDA. Training
runs the same check (at a small shape) before their first step; see docs/losses.md.

    python scripts/check_triton.py [--anchors N] [--classes K] [--dtypes float32,bfloat16]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from retina.ops import focal_triton
from retina.ops.focal_triton_check import TRAIN_STEP_ANCHORS, check_triton

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchors", type=int, default=TRAIN_STEP_ANCHORS, help="rows N")
    parser.add_argument("--classes", type=int, default=80, help="columns K")
    parser.add_argument("--dtypes", default="float32,bfloat16", help=",".join(DTYPES))
    args = parser.parse_args(argv)
    dtypes = args.dtypes.split(",")
    for name in dtypes:
        if name not in DTYPES:
            parser.error(f"--dtypes: unknown dtype {name!r} ({', '.join(DTYPES)})")
    if args.anchors < 1 or args.classes < 1:
        parser.error("--anchors and --classes must be >= 1")
    if not torch.cuda.is_available():
        print("check_triton: skipped: no CUDA device (the Triton kernels run only on CUDA)")
        return 0
    if not focal_triton.available():
        print("check_triton: FAILED: Triton is not installed", file=sys.stderr)
        return 1
    failed = False
    for name in dtypes:
        t0 = time.perf_counter()
        problems = check_triton(args.anchors, args.classes, DTYPES[name], "cuda")
        torch.cuda.synchronize()
        took = time.perf_counter() - t0
        status = "ok" if not problems else "FAILED"
        print(f"check_triton: {status}: {args.anchors}x{args.classes} {name} on "
              f"{torch.cuda.get_device_name()} ({took:.1f} s)")  # fmt: skip
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

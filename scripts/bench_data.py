"""Benchmark the data layer: memory and load time of CocoDetection vs pycocotools COCO on a
COCO-train2017-sized annotation file, DataLoader worker growth, transform throughput.

    .venv/bin/python scripts/bench_data.py [--out bench_results/data] [--quick]

Each measurement runs in a fresh subprocess; resident memory is read from /proc (Linux).
The annotation file has train2017's counts (118,287 images, 860,001 boxes, 80 categories with
COCO's ids 1..90) and its fields: images with license/coco_url/date_captured/flickr_url,
annotations with a 4-corner polygon segmentation (real COCO polygons are longer, so the
pycocotools numbers here are a lower bound). Writes ``results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from retina.errors import ResultsError
from retina.utils.io import require_output_file, require_output_folder, write_text_atomic

COCO_CAT_IDS = [i for i in range(1, 91) if i not in
                (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]  # train2017's 80 category ids


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers as right-aligned, space-padded ASCII: ``(N, width)`` uint8.
    (Whitespace before a number is valid JSON, so every record gets a fixed width.)"""
    values = np.asarray(values, dtype=np.int64)
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = (values[:, None] // powers) % 10
    out = (digits + ord("0")).astype(np.uint8)
    leading = (values[:, None] < powers) & (powers > 1)
    out[leading] = ord(" ")
    return out


def _fixed2(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative floats with two decimals, ``width`` integer digits: ``(N, width+3)``."""
    cents = np.round(np.asarray(values) * 100).astype(np.int64)
    dot = np.full((len(cents), 1), ord("."), dtype=np.uint8)
    return np.hstack([_digits(cents // 100, width), dot, _digits(cents % 100 + 100, 3)[:, 1:]])


def _records(parts: list) -> bytes:
    """Join per-record pieces (constant strings or ``(N, w)`` uint8 arrays) into one
    comma-separated byte string of fixed-width records."""
    n = next(len(p) for p in parts if isinstance(p, np.ndarray))
    cols = [np.broadcast_to(np.frombuffer(p.encode(), dtype=np.uint8), (n, len(p)))
            if isinstance(p, str) else p for p in parts + [","]]
    return np.hstack(cols).tobytes()[:-1]


def make_big_annotation_file(path: Path, num_images: int = 118_287, num_boxes: int = 860_001,
                             seed: int = 0) -> float:
    """Write a COCO-format file with the given counts (vectorised); returns seconds taken."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    widths = rng.integers(320, 641, num_images)
    heights = rng.integers(240, 641, num_images)
    image_ids = np.sort(rng.choice(600_000, num_images, replace=False)) + 1
    owner = rng.integers(0, num_images, num_boxes)
    w = np.maximum(1.0, rng.uniform(0.02, 0.9, num_boxes) * widths[owner]).round(2)
    h = np.maximum(1.0, rng.uniform(0.02, 0.9, num_boxes) * heights[owner]).round(2)
    x = (rng.uniform(0, 1, num_boxes) * (widths[owner] - w)).round(2)
    y = (rng.uniform(0, 1, num_boxes) * (heights[owner] - h)).round(2)
    cats = np.asarray(COCO_CAT_IDS)[rng.integers(0, 80, num_boxes)]
    crowd = (rng.uniform(0, 1, num_boxes) < 0.01).astype(np.int64)
    name = _digits(image_ids + 10**12, 13)[:, 1:]  # zero-padded 12 digits
    images = _records(['{"license":3,"file_name":"', name, '.jpg","coco_url":'
                       '"http://images.example/', name, '.jpg","height":', _digits(heights, 4),
                       ',"width":', _digits(widths, 4), ',"date_captured":"2013-11-14 16:28:13"'
                       ',"flickr_url":"http://farm.example/', name, '.jpg","id":',
                       _digits(image_ids, 7), "}"])
    fx, fy, fx2, fy2 = (_fixed2(v, 3) for v in (x, y, (x + w), (y + h)))
    anns = _records(['{"segmentation":[[', fx, ",", fy, ",", fx2, ",", fy, ",", fx2, ",", fy2,
                     ",", fx, ",", fy2, ']],"area":', _fixed2(w * h, 6), ',"iscrowd":',
                     _digits(crowd, 1), ',"image_id":', _digits(image_ids[owner], 7),
                     ',"bbox":[', fx, ",", fy, ",", _fixed2(w, 3), ",", _fixed2(h, 3),
                     '],"category_id":', _digits(cats, 2), ',"id":',
                     _digits(np.arange(1, num_boxes + 1), 7), "}"])
    categories = ",".join(f'{{"supercategory":"thing","id":{c},"name":"class{c}"}}'
                          for c in COCO_CAT_IDS)
    with open(path, "wb") as handle:
        handle.write(b'{"info":{"description":"bench"},"licenses":[],"images":[')
        handle.write(images)
        handle.write(b'],"annotations":[')
        handle.write(anns)
        handle.write(f'],"categories":[{categories}]}}'.encode())
    return time.perf_counter() - start


_RSS = """
import gc, resource, time
def rss_mb():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
"""

_LOAD = _RSS + """
import json, sys
import torch, numpy  # same imports in both runs
from pycocotools.coco import COCO
from retina.data import CocoDetection
ann, which = sys.argv[1], sys.argv[2]
gc.collect(); before = rss_mb(); t = time.perf_counter()
if which == "retina":
    obj = CocoDetection(ann, "/nonexistent")
else:
    import contextlib, io
    with contextlib.redirect_stdout(io.StringIO()):
        obj = COCO(ann)
seconds = time.perf_counter() - t
gc.collect()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "held_mb": rss_mb() - before, "peak_mb": peak - before}))
"""

_WORKERS = _RSS + """
import json, os, sys
import torch
from torch.utils.data import DataLoader, Dataset
from retina.data import CocoDetection
ann, which, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])

def private_mb(pid="self"):
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0].endswith(":") and len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0][:-1]] = int(parts[1])
    return (fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)) / 1024

if which == "retina":
    source = CocoDetection(ann, "/nonexistent")
    n = len(source)
    def read(i):
        source.image_info(i); source.annotations(i)
else:
    import contextlib, io
    from pycocotools.coco import COCO
    with contextlib.redirect_stdout(io.StringIO()):
        source = COCO(ann)
    ids = list(source.imgs)
    n = len(ids)
    def read(i):
        source.loadImgs(ids[i]); source.loadAnns(source.getAnnIds(imgIds=ids[i]))

class Chunks(Dataset):
    # item c reads records [c*1024, (c+1)*1024) and reports this worker's private memory
    start = None
    def __len__(self):
        return -(-n // 1024)
    def __getitem__(self, c):
        for i in range(c * 1024, min(n, (c + 1) * 1024)):
            read(i)
        return os.getpid(), Chunks.start, private_mb()

def init(_):
    Chunks.start = private_mb()

gc.collect(); gc.freeze()
loader = DataLoader(Chunks(), batch_size=None, num_workers=workers, worker_init_fn=init)
last = {}
t = time.perf_counter()
for pid, start, now in loader:
    last[pid] = now - start
print(json.dumps({"growth_mb": sorted(last.values()), "seconds": time.perf_counter() - t,
                  "records": n}))
"""

_THROUGHPUT = _RSS + """
import json, sys, time
import numpy as np
from retina.data import CocoDetection, build_transforms
root, seconds = sys.argv[1], float(sys.argv[2])
ann = f"{root}/annotations/instances_train.json"
out = {}
for name, kwargs in [("resize+flip", {}),
                     ("resize+flip+photometric", {"photometric": True}),
                     ("+scale jitter+crop", {"photometric": True, "scale_jitter": (0.8, 1.25),
                                             "crop": (320, 320)})]:
    t = build_transforms(True, [288, 320, 352], 512, seed=0, **kwargs)
    ds = CocoDetection(ann, f"{root}/train", transforms=t, drop_empty=True)
    ds[0]
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        ds[count % len(ds)]; count += 1
    out[name] = count / (time.perf_counter() - start)
plain = CocoDetection(ann, f"{root}/train")
count, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    plain[count % len(plain)]; count += 1
out["decode only"] = count / (time.perf_counter() - start)
print(json.dumps(out))
"""


def _run(code: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{result.stderr.strip().splitlines()[-1]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench_results/data", help="output directory")
    parser.add_argument("--quick", action="store_true",
                        help="a tenth of the records (smoke test; numbers not representative)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput setting")
    parser.add_argument("--load-repeats", type=int, default=2,
                        help="alternating load runs per loader; the fastest is kept")
    parser.add_argument("--only-load", action="store_true",
                        help="re-measure loading only, keeping the other results of --out")
    parser.add_argument("--skip-pycocotools-workers", action="store_true",
                        help="do not measure worker growth for the pycocotools baseline")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        require_output_folder(out, "--out")
        for name in ("results.json", "results.md", "instances_bench.json"):
            require_output_file(out / name)
    except ResultsError as exc:
        raise SystemExit(f"bench_data: error: {exc}") from None
    out.mkdir(parents=True, exist_ok=True)
    scale = 10 if args.quick else 1
    ann = out / "instances_bench.json"
    gen_s = make_big_annotation_file(ann, 118_287 // scale, 860_001 // scale)
    res: dict = {"generate_s": gen_s, "ann_mb": ann.stat().st_size / 2**20,
                 "images": 118_287 // scale, "boxes": 860_001 // scale,
                 "cpu": os.cpu_count()}
    print(f"annotation file: {res['ann_mb']:.0f} MB in {gen_s:.1f} s", flush=True)
    previous = out / "results.json"
    if args.only_load and previous.is_file():
        res = {**json.loads(previous.read_text()), **res}
    # alternate the two loaders and keep each one's fastest run: the machine is shared
    runs: dict[str, list[dict]] = {"retina": [], "pycocotools": []}
    for _ in range(max(1, args.load_repeats)):
        for which, found in runs.items():
            found.append(_run(_LOAD, ann, which))
            print(which, found[-1], flush=True)
    for which, found in runs.items():
        res[f"load_{which}"] = min(found, key=lambda r: r["seconds"])
    if not args.only_load:
        res["workers_retina"] = _run(_WORKERS, ann, "retina", args.workers)
        print("workers retina", res["workers_retina"], flush=True)
        if not args.skip_pycocotools_workers:
            res["workers_pycocotools"] = _run(_WORKERS, ann, "pycocotools", args.workers)
            print("workers pycocotools", res["workers_pycocotools"], flush=True)
        shapes = out / "shapes"
        if not (shapes / "annotations/instances_train.json").is_file():
            from retina.data.shapes import make_shapes_dataset

            make_shapes_dataset(shapes, train=64, val=0, size=320, seed=0, workers=1)
        res["throughput"] = _run(_THROUGHPUT, shapes, args.seconds)
        print("throughput", res["throughput"], flush=True)
    write_text_atomic(out / "results.json", json.dumps(res, indent=2, sort_keys=True))
    write_text_atomic(out / "results.md", render_markdown(res))
    print(render_markdown(res))
    ann.unlink()
    return 0


def render_markdown(res: dict) -> str:
    """The README table from ``results.json``'s content."""
    r, p = res["load_retina"], res["load_pycocotools"]
    lines = [
        f"Annotation file: {res['images']:,} images, {res['boxes']:,} boxes, 80 categories "
        f"({res['ann_mb']:.0f} MB, generated in {res['generate_s']:.1f} s).",
        "",
        "| | load time (s) | resident memory held (MB) | peak during load (MB) |",
        "|---|---|---|---|",
        f"| `CocoDetection` | {r['seconds']:.1f} | {r['held_mb']:.0f} | {r['peak_mb']:.0f} |",
        f"| pycocotools `COCO` | {p['seconds']:.1f} | {p['held_mb']:.0f} | {p['peak_mb']:.0f} |",
        f"| ratio | {r['seconds'] / p['seconds']:.2f} | {r['held_mb'] / p['held_mb']:.3f} | "
        f"{r['peak_mb'] / p['peak_mb']:.2f} |",
        "",
    ]
    rows = [("`CocoDetection`", res["workers_retina"])]
    if "workers_pycocotools" in res:
        rows.append(("pycocotools `COCO`", res["workers_pycocotools"]))
    n = len(res["workers_retina"]["growth_mb"])
    lines += [f"| {n} DataLoader workers reading every record once | private memory growth per "
              "worker (MB) | seconds |", "|---|---|---|"]
    for name, w in rows:
        growth = ", ".join(f"{g:.1f}" for g in w["growth_mb"])
        lines.append(f"| {name} | {growth} | {w['seconds']:.1f} |")
    lines += ["", "| training pipeline on shapes 320x320 (one process) | images/s |",
              "|---|---|"]
    order = ["decode only", "resize+flip", "resize+flip+photometric", "+scale jitter+crop"]
    for name in sorted(res["throughput"], key=lambda k: order.index(k) if k in order else 99):
        lines.append(f"| {name} | {res['throughput'][name]:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())

"""Synthetic COCO-format shapes dataset (``retina-make-shapes``).

Each image holds several crisp, saturated shapes (circle, square, triangle, ... one category
per shape) from about 12 px up to half the image side, on a textured low-saturation background
with distractors that are *not* objects: grey lines, grey blobs and pixel noise. Objects are
small relative to the image, so a RetinaNet sees tens of thousands of anchors per image and
only a handful of foreground ones: the imbalance the focal loss is about.

Output is deterministic: every image draws from its own ``numpy`` generator seeded with
``(seed, split, index)``, PNGs are written by Pillow with fixed settings and no metadata, and
the JSON is written with sorted keys. Same arguments, same package versions -> same bytes.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw

SHAPE_NAMES: tuple[str, ...] = (
    "circle", "square", "triangle", "diamond", "cross", "hexagon", "star", "ring",
)
"""Category names in id order; ``--num-classes K`` uses the first K."""

_SPLIT_CODES = {"train": 1, "val": 2}
# Huffman-only zlib: the pixel noise defeats LZ77 matching, so this is both the fastest
# setting and (here) the smallest output.
_PNG_OPTIONS = {"format": "PNG", "compress_level": 6, "compress_type": zlib.Z_HUFFMAN_ONLY,
                "optimize": False}
_MIN_OBJECT = 12
_NOISE = 12  # amplitude of the additive pixel noise, grey levels
_NOISE_LUT = [v * (2 * _NOISE + 1) // 256 for v in range(256)] * 3
# at most this fraction of the smaller of two boxes may be covered, so every object stays visible
_MAX_COVER = 0.15


def class_probabilities(num_classes: int, long_tail: bool, imbalance: float = 20.0) -> np.ndarray:
    """Sampling probability per class, ``(K,)``: uniform, or geometric from head to tail.

    With ``long_tail`` the first class is ``imbalance`` times as frequent as the last.
    """
    if not long_tail or num_classes == 1:
        return np.full(num_classes, 1.0 / num_classes)
    weights = imbalance ** (-np.arange(num_classes) / (num_classes - 1))
    return weights / weights.sum()


def _class_hues(num_classes: int) -> np.ndarray:
    """One hue per class, spread round the colour wheel, ``(K,)`` in [0, 1)."""
    return (np.arange(num_classes) / num_classes + 0.02) % 1.0


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Textured low-saturation background as an RGB image of side ``size``.

    Gratings are summed on a quarter-resolution grid and upsampled bilinearly: they are
    low-frequency anyway, and this keeps generation fast.
    """
    small = max(16, size // 4)
    coords = np.arange(small, dtype=np.float32) / small
    lum = np.full((small, small), rng.uniform(70, 170), dtype=np.float32)
    for _ in range(3):  # a few gratings at random frequency and phase
        fy, fx = rng.uniform(0.5, 6.0, size=2)
        phase_y, phase_x = rng.uniform(0, 2 * math.pi, size=2)
        amp = np.float32(rng.uniform(5, 25))
        lum += amp * np.outer(np.sin(np.float32(2 * math.pi * fy) * coords + np.float32(phase_y)),
                              np.cos(np.float32(2 * math.pi * fx) * coords + np.float32(phase_x)))
    tint = rng.uniform(-10, 10, size=3).astype(np.float32)
    rgb = np.clip(lum[:, :, None] + tint, 0, 255).astype(np.uint8)
    return Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR)


def _shape_polygon(
    kind: str, x0: float, y0: float, w: float, h: float
) -> list[tuple[float, float]]:
    """Polygon (or bounding corners) of one shape spanning the box ``(x0, y0, w, h)``."""
    cx, cy = x0 + w / 2, y0 + h / 2
    if kind == "triangle":
        return [(cx, y0), (x0 + w, y0 + h), (x0, y0 + h)]
    if kind == "diamond":
        return [(cx, y0), (x0 + w, cy), (cx, y0 + h), (x0, cy)]
    if kind == "hexagon":
        return [(cx + w / 2 * math.cos(a), cy + h / 2 * math.sin(a))
                for a in np.linspace(0, 2 * math.pi, 7)[:-1]]
    if kind == "star":
        pts = []
        for i in range(10):
            a = -math.pi / 2 + i * math.pi / 5
            r = 1.0 if i % 2 == 0 else 0.45
            pts.append((cx + r * w / 2 * math.cos(a), cy + r * h / 2 * math.sin(a)))
        return pts
    if kind == "cross":
        t = 0.18
        return [(cx - t * w, y0), (cx + t * w, y0), (cx + t * w, cy - t * h), (x0 + w, cy - t * h),
                (x0 + w, cy + t * h), (cx + t * w, cy + t * h), (cx + t * w, y0 + h),
                (cx - t * w, y0 + h), (cx - t * w, cy + t * h), (x0, cy + t * h),
                (x0, cy - t * h), (cx - t * w, cy - t * h)]
    return [(x0, y0), (x0 + w, y0 + h)]


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: np.ndarray,
                colour: tuple[int, int, int]) -> None:
    x0, y0, w, h = (float(v) for v in box)
    # Pillow's ellipse/rectangle include the end pixel; subtract 1 so the fill spans [x0, x0+w)
    corners = [x0, y0, x0 + w - 1, y0 + h - 1]
    if kind == "circle":
        draw.ellipse(corners, fill=colour)
    elif kind == "square":
        draw.rectangle(corners, fill=colour)
    elif kind == "ring":
        draw.ellipse(corners, outline=colour, width=max(2, int(min(w, h) * 0.18)))
    else:
        draw.polygon(_shape_polygon(kind, x0, y0, w - 1, h - 1), fill=colour)


def _overlaps(box: np.ndarray, placed: list[np.ndarray]) -> bool:
    if not placed:
        return False
    other = np.stack(placed)
    ix = np.clip(np.minimum(box[0] + box[2], other[:, 0] + other[:, 2])
                 - np.maximum(box[0], other[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[1] + box[3], other[:, 1] + other[:, 3])
                 - np.maximum(box[1], other[:, 1]), 0, None)
    inter = ix * iy
    smaller = np.minimum(box[2] * box[3], other[:, 2] * other[:, 3])
    return bool(np.any(inter / smaller > _MAX_COVER))


def _place(rng: np.random.Generator, kind: str, size: int, max_side: float,
           placed: list[np.ndarray]) -> np.ndarray | None:
    """A box ``[x0, y0, w, h]`` for one shape that covers no placed box much; None after 10
    tries."""
    for _try in range(10):
        # log-uniform side: small objects dominate, as in COCO
        side = float(np.exp(rng.uniform(math.log(_MIN_OBJECT), math.log(max_side))))
        aspect = 1.0 if kind in ("circle", "square") else float(rng.uniform(0.8, 1.25))
        w = round(min(max(side * aspect, _MIN_OBJECT), max_side))
        h = round(min(max(side / aspect, _MIN_OBJECT), max_side))
        x0 = int(rng.integers(0, size - w + 1))
        y0 = int(rng.integers(0, size - h + 1))
        box = np.array([x0, y0, w, h], dtype=np.float64)
        if not _overlaps(box, placed):
            return box
    return None


def render_image(rng: np.random.Generator, size: int, num_classes: int, probs: np.ndarray,
                 max_objects: int, *, max_object_side: int | None = None,
                 class_colours: bool = True, distractor_shapes: int = 0,
                 ) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """Draw one image and its objects.

    Args:
        max_object_side: largest object side in pixels (default and at most ``size / 2``).
        class_colours: each class has its own hue; False: every shape takes a random hue,
            so only the shape tells the class.
        distractor_shapes: up to this many coloured shapes of the kinds that are *not*
            classes (``SHAPE_NAMES[num_classes:]``), drawn but not annotated.

    Returns:
        image ``(S, S, 3)`` uint8 and a list of ``(label, [x, y, w, h])`` with 0-based labels.
    """
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    # distractors: grey lines and low-saturation blobs, drawn before the objects
    for _ in range(int(rng.integers(3, 9))):
        g = int(rng.uniform(40, 220))
        pts = rng.uniform(0, size, size=4).tolist()
        draw.line(pts, fill=(g, g, g), width=int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(2, 6))):
        g = rng.uniform(50, 200)
        shade = tuple(int(np.clip(g + d, 0, 255)) for d in rng.uniform(-8, 8, size=3))
        cx, cy = rng.uniform(0, size, size=2)
        rx, ry = rng.uniform(4, size / 6, size=2)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=shade)

    hues = _class_hues(num_classes)
    max_side = size / 2 if max_object_side is None else min(size / 2, float(max_object_side))
    objects: list[tuple[int, list[float]]] = []
    placed: list[np.ndarray] = []
    for _ in range(int(rng.integers(3, max_objects + 1))):
        label = int(rng.choice(num_classes, p=probs))
        kind = SHAPE_NAMES[label]
        box = _place(rng, kind, size, max_side, placed)
        if box is None:
            continue
        if class_colours:
            hue = (hues[label] + rng.uniform(-0.03, 0.03)) % 1.0
        else:
            hue = float(rng.uniform(0.0, 1.0))
        colour = _hsv_to_rgb(hue, float(rng.uniform(0.75, 1.0)), float(rng.uniform(0.75, 1.0)))
        _draw_shape(draw, kind, box, colour)
        placed.append(box)
        objects.append((label, [float(v) for v in box]))
    others = SHAPE_NAMES[num_classes:]
    extra = int(rng.integers(0, distractor_shapes + 1)) if others and distractor_shapes else 0
    for _ in range(extra):
        kind = others[int(rng.integers(len(others)))]
        box = _place(rng, kind, size, max_side, placed)
        if box is None:
            continue
        colour = _hsv_to_rgb(float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.75, 1.0)),
                             float(rng.uniform(0.75, 1.0)))
        _draw_shape(draw, kind, box, colour)
        placed.append(box)  # annotated objects never hide under a distractor, nor it under them

    # sensor-like noise, uniform in [-_NOISE, _NOISE]: random bytes mapped through a table
    noise = Image.frombytes("RGB", (size, size), rng.bytes(size * size * 3)).point(_NOISE_LUT)
    img = ImageChops.add(img, noise, scale=1.0, offset=-_NOISE)
    return np.asarray(img), objects


def _render_and_save(job: tuple[Path, str, int, int, int, int, np.ndarray, int, dict]
                     ) -> list[tuple[int, list[float]]]:
    """Render image ``index`` of a split, write its PNG and return its objects."""
    image_dir, split, index, size, seed, num_classes, probs, max_objects, options = job
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
    pixels, objects = render_image(rng, size, num_classes, probs, max_objects, **options)
    Image.fromarray(pixels).save(image_dir / f"{split}_{index:06d}.png", **_PNG_OPTIONS)
    return objects


def _write_split(out: Path, split: str, count: int, size: int, seed: int, num_classes: int,
                 probs: np.ndarray, max_objects: int, start_id: int, workers: int,
                 options: dict) -> None:
    image_dir = out / split
    image_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(image_dir, split, i, size, seed, num_classes, probs, max_objects, options)
            for i in range(count)]
    if workers > 1 and count >= 4 * workers:
        pool = ProcessPoolExecutor(workers)
        try:
            results = list(pool.map(_render_and_save, jobs, chunksize=16))
        finally:  # on Ctrl-C: drop the queued images, wait only for those being drawn
            pool.shutdown(wait=True, cancel_futures=True)
    else:
        results = [_render_and_save(job) for job in jobs]
    images, annotations = [], []
    ann_id = start_id
    for index, objects in enumerate(results):
        image_id = start_id + index
        images.append({"id": image_id, "file_name": f"{split}_{index:06d}.png",
                       "width": size, "height": size})
        for label, (x, y, w, h) in objects:
            annotations.append({
                "id": ann_id, "image_id": image_id, "category_id": label + 1,
                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0,
            })
            ann_id += 1
    categories = [{"id": k + 1, "name": SHAPE_NAMES[k], "supercategory": "shape"}
                  for k in range(num_classes)]
    dataset = {
        "info": {"description": f"retina synthetic shapes ({split})", "version": "1.0"},
        "licenses": [], "images": images, "annotations": annotations, "categories": categories,
    }
    ann_dir = out / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    (ann_dir / f"instances_{split}.json").write_text(
        json.dumps(dataset, sort_keys=True, separators=(",", ":")), encoding="utf-8")


GENERATOR_FILE = "generator.json"
"""The options a dataset was generated with (:func:`generator_options`), in its folder."""


def generator_options(**options: Any) -> dict[str, Any]:
    """Every option of :func:`make_shapes_dataset` that shapes the data (all but ``out`` and
    ``workers``), ``options`` over the defaults: what ``generator.json`` records.

    Raises:
        ValueError: an option :func:`make_shapes_dataset` does not take.
    """
    unknown = sorted(set(options) - set(_OPTION_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown generator option(s) {', '.join(unknown)}")
    return {**_OPTION_DEFAULTS, **options}


def recorded_options(root: str | Path) -> dict[str, Any] | None:
    """The options ``root``'s dataset was generated with: its ``generator.json``, else what
    its annotation files show (image counts, image size, number of classes) for a dataset
    written before that file existed; None when neither is readable."""
    root = Path(root)
    try:
        data = json.loads((root / GENERATOR_FILE).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        return None
    seen: dict[str, Any] = {}
    try:
        for split in ("train", "val"):
            ann = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
            seen[split] = len(ann["images"])
            if ann["images"]:
                seen["size"] = int(ann["images"][0]["width"])
            seen["num_classes"] = len(ann["categories"])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    return seen


def check_generated_root(root: str | Path, requested: dict[str, Any]) -> None:
    """An existing generated dataset must be the one ``requested`` (``data.generator``)
    describes: a config asking for other options would otherwise train on the old data
    while recording the new options.

    Raises:
        ConfigError: ``data.generator.<key>: ...`` naming the folder, both values and the
            ways out; or an option :func:`make_shapes_dataset` does not take.
    """
    from retina.errors import ConfigError

    try:
        wanted = generator_options(**requested)
    except ValueError as err:
        raise ConfigError("data.generator", str(err)) from None
    recorded = recorded_options(root)
    for key, value in sorted((recorded or {}).items()):
        if key in wanted and wanted[key] != value:
            raise ConfigError(
                f"data.generator.{key}",
                f"{root} was generated with {key}={json.dumps(value)}, this config asks for "
                f"{json.dumps(wanted[key])}; delete {root} to generate it again, or set "
                "paths.data_dir=DIR to generate it under DIR",
            )


def make_shapes_dataset(out: str | Path, train: int = 500, val: int = 100, size: int = 320,
                        seed: int = 0, num_classes: int = 3, long_tail: bool = False,
                        max_objects: int = 10, workers: int | None = None,
                        max_object_side: int | None = None, class_colours: bool = True,
                        distractor_shapes: int = 0) -> Path:
    """Write a deterministic COCO-format shapes dataset under ``out``.

    Layout: ``out/{train,val}/*.png`` and ``out/annotations/instances_{train,val}.json``.
    Category ids are ``1..num_classes`` (names from :data:`SHAPE_NAMES`); image ids are
    1-based in train and start at 1_000_001 in val so the two never collide.

    Args:
        out: output directory (created).
        train, val: number of images per split.
        size: square image side in pixels (>= 64).
        seed: master seed; each image's generator is seeded with ``(seed, split, index)``.
        num_classes: number of shape categories, 1..len(SHAPE_NAMES).
        long_tail: sample classes with a 20:1 head-to-tail geometric imbalance.
        max_objects: upper bound of objects per image (at least 3 are attempted).
        workers: processes used to render (default: all CPUs); the output does not depend on it.
        max_object_side, class_colours, distractor_shapes: see :func:`render_image`; the
            defaults give the demo's data.
    The dataset is written into a temporary sibling folder and renamed to ``out`` at the end
    (with ``generator.json``, the options), so an interrupted or failed generation leaves
    nothing; ``out`` must not exist or be an empty folder.

    Returns:
        the output directory.
    """
    if not 1 <= num_classes <= len(SHAPE_NAMES):
        raise ValueError(f"num_classes must be in 1..{len(SHAPE_NAMES)}, got {num_classes}")
    if size < 64:
        raise ValueError(f"size must be >= 64 pixels, got {size}")
    if train < 0 or val < 0 or max_objects < 3:
        raise ValueError("train and val must be >= 0 and max_objects >= 3")
    if max_object_side is not None and max_object_side < _MIN_OBJECT:
        raise ValueError(f"max_object_side must be >= {_MIN_OBJECT} pixels, got {max_object_side}")
    if distractor_shapes < 0:
        raise ValueError(f"distractor_shapes must be >= 0, got {distractor_shapes}")
    options = {"max_object_side": max_object_side, "class_colours": bool(class_colours),
               "distractor_shapes": int(distractor_shapes)}
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) or out.exists() and not out.is_dir():
        raise ValueError(f"{out} already exists and is not an empty folder: delete it or "
                         "choose another output folder")
    record = generator_options(train=train, val=val, size=size, seed=seed,
                               num_classes=num_classes, long_tail=bool(long_tail),
                               max_objects=max_objects, **options)
    probs = class_probabilities(num_classes, long_tail)
    workers = (os.cpu_count() or 1) if workers is None else workers
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_split(tmp, "train", train, size, seed, num_classes, probs, max_objects, 1,
                     workers, options)
        _write_split(tmp, "val", val, size, seed, num_classes, probs, max_objects, 1_000_001,
                     workers, options)
        (tmp / GENERATOR_FILE).write_text(json.dumps(record, sort_keys=True) + "\n",
                                          encoding="utf-8")
        os.replace(tmp, out)  # an empty ``out`` folder is replaced too
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


_OPTION_DEFAULTS: dict[str, Any] = {
    name: param.default
    for name, param in inspect.signature(make_shapes_dataset).parameters.items()
    if name not in ("out", "workers")
}

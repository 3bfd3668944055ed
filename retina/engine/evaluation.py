"""COCO box evaluation: inference over a loader, pycocotools' COCOeval, metric tables.

The numbers are pycocotools' own (``COCOeval`` with ``iouType="bbox"``), reported in
percent; nothing here re-implements the matching or the precision/recall accumulation.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retina.data.coco import detections_to_coco_results
from retina.utils.io import write_json_atomic

__all__ = [
    "METRIC_KEYS",
    "BACKENDS",
    "run_inference",
    "evaluate_detections",
    "detections_to_coco_results",
    "format_metrics_table",
    "check_backend",
]

logger = logging.getLogger(__name__)

# COCOeval.stats order: 6 AP numbers then 6 AR numbers.
METRIC_KEYS = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)
_METRIC_SETTINGS = {  # (IoU, area, maxDets) of each summary number, for the table
    "AP": ("0.50:0.95", "all", 100),
    "AP50": ("0.50", "all", 100),
    "AP75": ("0.75", "all", 100),
    "APs": ("0.50:0.95", "small", 100),
    "APm": ("0.50:0.95", "medium", 100),
    "APl": ("0.50:0.95", "large", 100),
    "AR1": ("0.50:0.95", "all", 1),
    "AR10": ("0.50:0.95", "all", 10),
    "AR100": ("0.50:0.95", "all", 100),
    "ARs": ("0.50:0.95", "small", 100),
    "ARm": ("0.50:0.95", "medium", 100),
    "ARl": ("0.50:0.95", "large", 100),
}
BACKENDS = ("pycocotools", "faster_coco_eval")


@torch.inference_mode()
def run_inference(
    model: torch.nn.Module, loader: Iterable, device: str | torch.device
) -> list[dict[str, Any]]:
    """Run ``model`` in eval mode over ``loader`` and return detections in original pixels.

    Args:
        model: detector; in eval mode ``model(list of (3,H,W) images)`` returns a list of
            ``{"boxes": (D,4) xyxy, "scores": (D,), "labels": (D,)}`` in the pixels of the
            images it was given.
        loader: yields ``(images, targets)`` batches (``collate_detection``): a list of
            ``(3,H_i,W_i)`` tensors (or a ``(B,3,H,W)`` tensor) and target dicts with
            ``image_id`` and ``orig_size`` ``(h, w)``.
        device: where the model runs.

    Returns:
        One dict per image, in loader order: ``image_id`` int, ``boxes`` ``(D,4)`` float32
        xyxy rescaled from the transformed image to ``orig_size`` and clipped to it,
        ``scores`` ``(D,)`` float32, ``labels`` ``(D,)`` int64 contiguous labels; on CPU.
    """
    was_training = model.training
    model.eval()
    results: list[dict[str, Any]] = []
    try:
        for images, targets in loader:
            images = [image.to(device, non_blocking=True) for image in images]
            outputs = model(images)
            for image, target, output in zip(images, targets, outputs, strict=True):
                results.append(_rescale(output, image.shape[-2:], target))
    finally:
        model.train(was_training)
    return results


def _rescale(output: dict, input_hw: Sequence[int], target: dict) -> dict[str, Any]:
    """Map one image's boxes from the transformed image ``input_hw`` to ``orig_size``."""
    in_h, in_w = int(input_hw[0]), int(input_hw[1])
    orig_h, orig_w = (int(v) for v in target["orig_size"])
    boxes = output["boxes"].detach().to("cpu", torch.float32).reshape(-1, 4)
    scale = torch.tensor([orig_w / in_w, orig_h / in_h, orig_w / in_w, orig_h / in_h])
    boxes = boxes * scale
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, orig_w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, orig_h)
    return {
        "image_id": int(target["image_id"]),
        "boxes": boxes,
        "scores": output["scores"].detach().to("cpu", torch.float32).reshape(-1),
        "labels": output["labels"].detach().to("cpu", torch.int64).reshape(-1),
    }


def evaluate_detections(
    detections: list[dict[str, Any]],
    dataset: Any,
    out_dir: str | os.PathLike | None = None,
    backend: str = "pycocotools",
    evaluated: Iterable[int] | None = None,
) -> dict[str, Any]:
    """COCO box metrics of ``detections`` against ``dataset``'s annotation file.

    Args:
        detections: :func:`run_inference` output (this rank's share when distributed).
        dataset: exposes ``ann_file`` (COCO JSON), ``cat_ids`` (label → category id),
            ``class_names`` and its image ids (``image_ids``); only those images are
            evaluated, so a subset of an annotation file is scored on its own images.
        out_dir: if given, ``coco_results.json`` (COCO results format, original category
            ids, xywh boxes) is written there (by rank 0).
        backend: ``"pycocotools"`` or ``"faster_coco_eval"`` (if installed).
        evaluated: ids of the images inference ran on (this rank's; gathered like the
            detections). The others (unreadable images the loader skipped) are left out of
            the evaluation, ground truth included, and counted. None: every image of
            ``dataset`` (those without a detection count as missed).

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm",
        "ARl"}`` in percent, plus ``per_category`` ``{class_name: AP}``, ``num_images``
        (evaluated) and ``skipped_images``. As in COCOeval,
        ``-1`` marks a number without ground truth (e.g. no small objects). Zero detections
        give 0 (not an error). When ``torch.distributed`` is initialised, detections are
        gathered from all ranks, evaluated on rank 0 and the metrics sent to every rank.
    """
    check_backend(backend)
    coco_cls, eval_cls = _backend_classes(backend)
    detections = [_to_numpy_detection(d) for d in detections]
    ids = None if evaluated is None else sorted({int(i) for i in evaluated})
    rank, world = _dist_rank_world()
    if world > 1:
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, (detections, ids))
        detections = _merge_ranks([dets for dets, _ in gathered])
        ids = None if ids is None else sorted({i for _, part in gathered for i in part})
    metrics = None
    if rank == 0:
        metrics = _evaluate(detections, dataset, out_dir, coco_cls, eval_cls, ids)
    if world > 1:
        box = [metrics]
        torch.distributed.broadcast_object_list(box, src=0)
        metrics = box[0]
    return metrics


def _evaluate(detections, dataset, out_dir, coco_cls, eval_cls, evaluated) -> dict[str, Any]:
    all_ids = sorted({int(i) for i in _dataset_image_ids(dataset)})
    image_ids = all_ids if evaluated is None else sorted(set(all_ids) & set(evaluated))
    skipped = len(all_ids) - len(image_ids)
    if skipped:
        logger.warning("%d of %d images were not evaluated (unreadable, skipped): their ground "
                       "truth is left out of the metrics", skipped, len(all_ids))
    cat_ids = [int(c) for c in dataset.cat_ids]
    wanted = set(image_ids)
    kept = [d for d in detections if d["image_id"] in wanted]
    if len(kept) < len(detections):
        logger.warning("ignoring detections for %d images not in the dataset",
                       len(detections) - len(kept))
    results = detections_to_coco_results(kept, cat_ids)
    if out_dir is not None:
        write_json_atomic(Path(out_dir) / "coco_results.json", results)

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = coco_cls(str(dataset.ann_file))
        missing = wanted - set(gt.getImgIds())
        if missing:
            raise ValueError(
                f"{dataset.ann_file}: image id(s) {sorted(missing)[:5]} of the dataset are "
                "not in the annotation file"
            )
        dt = gt.loadRes(results) if results else _empty_results(coco_cls, gt)
        coco_eval = eval_cls(gt, dt, "bbox")
        coco_eval.params.imgIds = image_ids
        coco_eval.params.catIds = sorted(cat_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()

    metrics: dict[str, Any] = {
        key: _percent(value) for key, value in zip(METRIC_KEYS, coco_eval.stats, strict=True)
    }
    metrics["per_category"] = _per_category_ap(coco_eval, cat_ids, list(dataset.class_names))
    metrics["num_images"] = len(image_ids)
    metrics["skipped_images"] = skipped
    return metrics


def _per_category_ap(coco_eval, cat_ids: list[int], class_names: list[str]) -> dict[str, float]:
    """AP (IoU 0.50:0.95, all areas, 100 detections) per class, in label order."""
    precision = coco_eval.eval["precision"]  # (T, R, K, A, M), -1 where undefined
    order = list(coco_eval.params.catIds)
    out = {}
    for name, cat_id in zip(class_names, cat_ids, strict=True):
        p = precision[:, :, order.index(cat_id), 0, -1]
        p = p[p > -1]
        out[str(name)] = _percent(float(np.mean(p))) if p.size else -1.0
    return out


@torch.no_grad()
def measure_inference_ms(model: torch.nn.Module, dataset: Any, device: str | torch.device,
                         images: int, warmup: int = 2) -> float:
    """Median wall time in milliseconds of ``model`` on one image (batch 1, preprocessing,
    forward and postprocessing; data loading excluded) over the first ``images`` readable
    images of ``dataset``, after ``warmup`` untimed calls. NaN when no image is readable."""
    import statistics
    import time

    was_training = model.training
    model.eval()
    items = []
    for index in range(len(dataset)):
        if len(items) == images:
            break
        item = dataset[index]
        if item is not None:
            items.append(item[0].to(device))
    times = []
    try:
        for i, image in enumerate(items[:warmup] + items):
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model([image])
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)
            if i >= min(warmup, len(items)):
                times.append(1000.0 * (time.perf_counter() - start))
    finally:
        model.train(was_training)
    return statistics.median(times) if times else float("nan")


def format_metrics_table(metrics: dict[str, Any], columns: int = 3) -> str:
    """The 12 COCO numbers and the per-category AP as a plain-text table (``-`` = no GT)."""
    lines = [f"{'metric':<7} {'IoU':<10} {'area':<7} {'maxDets':>7} {'value':>7}"]
    for key in METRIC_KEYS:
        iou, area, max_dets = _METRIC_SETTINGS[key]
        lines.append(f"{key:<7} {iou:<10} {area:<7} {max_dets:>7} {_fmt(metrics[key]):>7}")
    per_cat = metrics.get("per_category") or {}
    if per_cat:
        width = max(8, *(len(name) for name in per_cat))
        cells = [f"{name:<{width}} {_fmt(ap):>6}" for name, ap in per_cat.items()]
        header = f"{'category':<{width}} {'AP':>6}"
        lines += ["", " | ".join([header] * min(columns, len(cells)))]
        for start in range(0, len(cells), columns):
            lines.append(" | ".join(cells[start : start + columns]))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- internals


def check_backend(backend: str) -> None:
    """Raise ``ValueError`` (one line) if ``backend`` is unknown or not installed."""
    if backend not in BACKENDS:
        raise ValueError(f"eval backend must be one of {BACKENDS}, got {backend!r}")
    _backend_classes(backend)


def _backend_classes(backend: str):
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError as err:
        raise ValueError(
            "eval backend 'faster_coco_eval' needs the faster-coco-eval package, which is not "
            "installed (pip install faster-coco-eval), or use eval.backend=pycocotools"
        ) from err
    return COCO, COCOeval_faster


def _empty_results(coco_cls, gt):
    """A results set with no detections (``loadRes`` refuses an empty list)."""
    dt = coco_cls()
    dt.dataset = {
        "images": list(gt.dataset["images"]),
        "categories": list(gt.dataset.get("categories", [])),
        "annotations": [],
    }
    dt.createIndex()
    return dt


def _dataset_image_ids(dataset) -> Iterable[int]:
    for name in ("image_ids", "ids"):
        ids = getattr(dataset, name, None)
        if ids is not None:
            return ids
    raise TypeError(f"{type(dataset).__name__} exposes no image_ids to evaluate")


def _dist_rank_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _merge_ranks(per_rank: list[list[dict]]) -> list[dict]:
    """Concatenate ranks' detections, dropping repeats (DistributedSampler pads with them)."""
    seen: set[int] = set()
    merged = []
    for detections in per_rank:
        for det in detections:
            if det["image_id"] not in seen:
                seen.add(det["image_id"])
                merged.append(det)
    return merged


def _to_numpy_detection(det: dict[str, Any]) -> dict[str, Any]:
    return {
        "image_id": int(det["image_id"]),
        "boxes": _numpy(det["boxes"], np.float32).reshape(-1, 4),
        "scores": _numpy(det["scores"], np.float32).reshape(-1),
        "labels": _numpy(det["labels"], np.int64).reshape(-1),
    }


def _numpy(value: Any, dtype) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _percent(value: float) -> float:
    value = float(value)
    return -1.0 if value < 0 or math.isnan(value) else value * 100.0


def _fmt(value: float) -> str:
    return "-" if value < 0 else f"{value:.2f}"

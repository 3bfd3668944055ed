"""COCO evaluation: parity with pycocotools' COCOeval, edge cases, rescaling, distributed."""

import contextlib
import io
import json
import os
import socket
import sys
import types

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import retina.utils.io
from retina.engine.evaluation import (
    METRIC_KEYS,
    evaluate_detections,
    format_metrics_table,
    run_inference,
)
from retina.errors import ResultsError
from retina.utils.io import write_json_atomic

CAT_IDS = [3, 7, 12]  # deliberately not contiguous
NAMES = ["circle", "square", "triangle"]


def _make_gt(path, num_images=12, seed=0):
    """A small COCO file: boxes of all three area ranges, one crowd box, one empty image."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id}.png"})
        if image_id == num_images:
            continue  # an image without objects
        for _ in range(rng.integers(1, 5)):
            w, h = rng.choice([20, 60, 150]) * rng.uniform(0.8, 1.2, size=2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.choice(CAT_IDS)),
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    anns[0]["iscrowd"] = 1
    categories = [{"id": c, "name": n} for c, n in zip(CAT_IDS, NAMES, strict=True)]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return anns


def _dataset(ann_file, image_ids):
    return types.SimpleNamespace(
        ann_file=str(ann_file), cat_ids=CAT_IDS, class_names=NAMES, image_ids=list(image_ids)
    )


def _noisy_detections(anns, num_images, seed=1):
    """Jittered copies of the GT (some with the wrong class) plus random false positives."""
    rng = np.random.default_rng(seed)
    per_image = {i: ([], [], []) for i in range(1, num_images + 1)}
    for ann in anns:
        if rng.random() < 0.15:
            continue  # missed
        x, y, w, h = ann["bbox"]
        jitter = rng.normal(0, 0.08, size=4) * [w, h, w, h]
        box = np.array([x, y, x + w, y + h]) + jitter
        label = CAT_IDS.index(ann["category_id"])
        if rng.random() < 0.1:
            label = (label + 1) % 3
        boxes, scores, labels = per_image[ann["image_id"]]
        boxes.append(box)
        scores.append(rng.uniform(0.3, 1.0))
        labels.append(label)
    for boxes, scores, labels in per_image.values():
        for _ in range(rng.integers(0, 4)):
            x, y = rng.uniform(0, 500), rng.uniform(0, 380)
            boxes.append([x, y, x + rng.uniform(10, 140), y + rng.uniform(10, 100)])
            scores.append(rng.uniform(0.05, 0.6))
            labels.append(int(rng.integers(0, 3)))
    return [
        {
            "image_id": image_id,
            "boxes": torch.tensor(np.array(boxes, dtype=np.float32).reshape(-1, 4)),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64),
        }
        for image_id, (boxes, scores, labels) in per_image.items()
    ]


def _reference(ann_file, detections, image_ids):
    """COCOeval run directly, with the conversion written out independently."""
    results = []
    for det in detections:
        for (x1, y1, x2, y2), s, l in zip(
            det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist(), strict=True
        ):
            results.append(
                {
                    "image_id": det["image_id"],
                    "category_id": CAT_IDS[l],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": s,
                }
            )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        coco_eval = COCOeval(gt, gt.loadRes(results), "bbox")
        coco_eval.params.imgIds = list(image_ids)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    per_cat = {}
    for k, name in enumerate(NAMES):
        p = coco_eval.eval["precision"][:, :, k, 0, -1]
        per_cat[name] = float(np.mean(p[p > -1])) * 100
    return [float(s) * 100 if s >= 0 else -1.0 for s in coco_eval.stats], per_cat


@pytest.fixture()
def gt_file(tmp_path):
    path = tmp_path / "gt.json"
    anns = _make_gt(path)
    return path, anns


def test_parity_with_cocoeval(gt_file, tmp_path):
    path, anns = gt_file
    detections = _noisy_detections(anns, 12)
    metrics = evaluate_detections(detections, _dataset(path, range(1, 13)), out_dir=tmp_path)
    stats, per_cat = _reference(path, detections, range(1, 13))
    assert [metrics[k] for k in METRIC_KEYS] == pytest.approx(stats, abs=1e-9)
    assert metrics["per_category"] == pytest.approx(per_cat, abs=1e-9)
    assert 20 < metrics["AP"] < 95  # a non-trivial case, not all zeros or all perfect


def test_only_dataset_images_are_evaluated(gt_file):
    path, anns = gt_file
    detections = _noisy_detections(anns, 12)
    subset = [2, 3, 5, 8]
    metrics = evaluate_detections(detections, _dataset(path, subset))
    stats, _ = _reference(path, [d for d in detections if d["image_id"] in subset], subset)
    assert [metrics[k] for k in METRIC_KEYS] == pytest.approx(stats, abs=1e-9)


def test_perfect_detections_give_100(gt_file):
    path, anns = gt_file
    detections = {}
    for ann in anns:
        if ann["iscrowd"]:
            continue
        x, y, w, h = ann["bbox"]
        d = detections.setdefault(ann["image_id"], {"boxes": [], "scores": [], "labels": []})
        d["boxes"].append([x, y, x + w, y + h])
        d["scores"].append(0.9)
        d["labels"].append(CAT_IDS.index(ann["category_id"]))
    dets = [
        {
            "image_id": i,
            "boxes": torch.tensor(d["boxes"], dtype=torch.float64),
            "scores": torch.tensor(d["scores"]),
            "labels": torch.tensor(d["labels"]),
        }
        for i, d in detections.items()
    ]
    metrics = evaluate_detections(dets, _dataset(path, range(1, 13)))
    # AR1 stays below 100 on images with several objects (one detection allowed).
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR10", "AR100", "ARs", "ARm", "ARl"):
        assert metrics[key] == pytest.approx(100.0), key
    assert all(v == pytest.approx(100.0) for v in metrics["per_category"].values())


def test_zero_detections(tmp_path):
    path = tmp_path / "gt.json"
    _make_gt(path)
    empty = [
        {"image_id": i, "boxes": torch.zeros(0, 4), "scores": torch.zeros(0),
         "labels": torch.zeros(0, dtype=torch.int64)}
        for i in range(1, 13)
    ]
    for detections in ([], empty):
        metrics = evaluate_detections(detections, _dataset(path, range(1, 13)), out_dir=tmp_path)
        assert all(metrics[k] == 0.0 for k in METRIC_KEYS)
        assert metrics["per_category"] == {name: 0.0 for name in NAMES}
        assert json.loads((tmp_path / "coco_results.json").read_text()) == []


def test_metric_without_gt_is_minus_one(tmp_path):
    path = tmp_path / "gt.json"
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.png"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 50, 50], "area": 2500,
             "iscrowd": 0}
        ],
        "categories": [{"id": c, "name": n} for c, n in zip(CAT_IDS, NAMES, strict=True)],
    }
    path.write_text(json.dumps(gt))
    metrics = evaluate_detections([], _dataset(path, [1]))
    assert metrics["APm"] == 0.0 and metrics["APs"] == -1.0 and metrics["APl"] == -1.0
    assert metrics["per_category"] == {"circle": 0.0, "square": -1.0, "triangle": -1.0}


def test_label_mapping_round_trip(gt_file, tmp_path):
    path, _ = gt_file
    det = {
        "image_id": 4,
        "boxes": torch.tensor([[10.0, 20.0, 110.0, 70.0]] * 3),
        "scores": torch.tensor([0.9, 0.8, 0.7]),
        "labels": torch.tensor([0, 1, 2]),
    }
    evaluate_detections([det], _dataset(path, range(1, 13)), out_dir=tmp_path)
    results = json.loads((tmp_path / "coco_results.json").read_text())
    assert [r["category_id"] for r in results] == CAT_IDS
    assert results[0]["bbox"] == pytest.approx([10.0, 20.0, 100.0, 50.0])
    assert results[0]["image_id"] == 4 and results[0]["score"] == pytest.approx(0.9)


def test_bad_label_and_backend(gt_file):
    path, _ = gt_file
    det = {"image_id": 1, "boxes": torch.ones(1, 4), "scores": torch.ones(1),
           "labels": torch.tensor([3])}
    with pytest.raises(ValueError, match="label 3 outside the dataset's 3 classes"):
        evaluate_detections([det], _dataset(path, [1]))
    with pytest.raises(ValueError, match="eval backend must be one of"):
        evaluate_detections([], _dataset(path, [1]), backend="nope")


def test_faster_coco_eval_missing_is_a_clear_error(gt_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # hidden: its import fails
    path, _ = gt_file
    with pytest.raises(ValueError, match="needs the faster-coco-eval package"):
        evaluate_detections([], _dataset(path, [1]), backend="faster_coco_eval")


def test_format_metrics_table(gt_file):
    path, anns = gt_file
    metrics = evaluate_detections(_noisy_detections(anns, 12), _dataset(path, range(1, 13)))
    table = format_metrics_table(metrics)
    for key in METRIC_KEYS:
        assert f"\n{key} " in table
    for name in NAMES:
        assert f"{name} " in table
    assert f"{metrics['AP']:.2f}" in table


class _FixedModel(torch.nn.Module):
    """Returns one box per image at fixed transformed-image coordinates."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images):
        assert not self.training
        return [
            {
                "boxes": torch.tensor([[5.0, 10.0, 25.0, 40.0], [-3.0, 0.0, 60.0, 45.0]]),
                "scores": torch.tensor([0.9, 0.5]),
                "labels": torch.tensor([1, 0]),
            }
            for _ in images
        ]


def test_run_inference_rescales_to_original_size():
    model = _FixedModel().train()
    images = [torch.zeros(3, 40, 50, dtype=torch.uint8), torch.zeros(3, 40, 50, dtype=torch.uint8)]
    targets = [
        {"image_id": 7, "orig_size": (80, 100)},
        {"image_id": 9, "orig_size": torch.tensor([20, 25])},
    ]
    out = run_inference(model, [(images, targets)], "cpu")
    assert model.training
    assert [d["image_id"] for d in out] == [7, 9]
    assert torch.allclose(out[0]["boxes"], torch.tensor([[10.0, 20.0, 50.0, 80.0],
                                                         [0.0, 0.0, 100.0, 80.0]]))
    assert torch.allclose(out[1]["boxes"], torch.tensor([[2.5, 5.0, 12.5, 20.0],
                                                         [0.0, 0.0, 25.0, 20.0]]))
    assert out[0]["labels"].dtype == torch.int64 and out[0]["scores"].shape == (2,)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dist_worker(rank, world, port, ann_file, shards, queue):
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        metrics = evaluate_detections(shards[rank], _dataset(ann_file, range(1, 13)))
        queue.put((rank, metrics))
    finally:
        dist.destroy_process_group()


def test_distributed_gather_matches_single_process(gt_file):
    path, anns = gt_file
    detections = _noisy_detections(anns, 12)
    single = evaluate_detections(detections, _dataset(path, range(1, 13)))
    # A DistributedSampler-like split that pads rank 1 with a repeat of image 1.
    shards = [detections[0::2], detections[1::2] + [detections[0]]]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(
        _dist_worker, args=(2, _free_port(), str(path), shards, queue), nprocs=2,
        start_method="spawn",
    )
    results = dict(queue.get(timeout=180) for _ in range(2))
    assert results[0] == single and results[1] == single


def test_write_json_atomic_on_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "coco_results.json"
    write_json_atomic(path, [1, 2])
    real_fsync = os.fsync

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(retina.utils.io.os, "fsync", full_disk)
    with pytest.raises(ResultsError, match="coco_results.json: cannot write .No space left"):
        write_json_atomic(path, [3, 4])
    monkeypatch.setattr(retina.utils.io.os, "fsync", real_fsync)
    assert json.loads(path.read_text()) == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["coco_results.json"]


def test_unwritable_out_dir(gt_file, tmp_path):
    path, _ = gt_file
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ResultsError, match="coco_results.json: cannot write"):
        evaluate_detections([], _dataset(path, [1]), out_dir=blocker / "run")


def test_faster_coco_eval_gives_identical_numbers(gt_file):
    """The optional backend must reproduce pycocotools' 12 numbers and per-category APs."""
    pytest.importorskip("faster_coco_eval")
    path, anns = gt_file
    dets = _noisy_detections(anns, 12)
    ref = evaluate_detections(dets, _dataset(path, range(1, 13)))
    fast = evaluate_detections(dets, _dataset(path, range(1, 13)), backend="faster_coco_eval")
    for key in METRIC_KEYS:
        assert fast[key] == pytest.approx(ref[key], abs=1e-6), key
    assert fast["per_category"] == pytest.approx(ref["per_category"], abs=1e-6)


def test_images_not_evaluated_are_left_out_and_counted(gt_file, caplog):
    """Issue 23: unreadable val images (skipped by the loader) must not count their ground
    truth as missed; the metrics say how many were evaluated and skipped."""
    path, anns = gt_file
    detections = _noisy_detections(anns, 12)
    evaluated = [d["image_id"] for d in detections if d["image_id"] not in (2, 5)]
    kept = [d for d in detections if d["image_id"] in evaluated]
    with caplog.at_level("WARNING"):
        metrics = evaluate_detections(kept, _dataset(path, range(1, 13)), evaluated=evaluated)
    stats, _ = _reference(path, kept, evaluated)
    assert [metrics[k] for k in METRIC_KEYS] == pytest.approx(stats, abs=1e-9)
    assert (metrics["num_images"], metrics["skipped_images"]) == (10, 2)
    assert "2 of 12 images were not evaluated" in caplog.text

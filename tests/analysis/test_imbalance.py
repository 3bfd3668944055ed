"""retina-stats on a dataset with hand-countable anchors and matches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from retina.analysis.imbalance import count_image, loss_shares
from retina.config import CONFIG_DIR
from retina.engine.build import build_model

REPO = Path(__file__).resolve().parents[2]
# 128 px, one anchor per location (size 16 at stride 8 ... 256 at 128): 16² + 8² + 4² + 2² + 1
# = 341 anchors. Box A equals the P3 anchor centred at (32, 32): 1 positive, its neighbours
# have IoU 1/3. Box B [62, 24, 78, 40]: the P3 anchor centred at (72, 32) has IoU 224/288
# (positive), the one at (64, 32) has IoU 160/352 = 0.45 (ignored); every other anchor < 0.4.
BOXES = [[24.0, 24.0, 40.0, 40.0], [62.0, 24.0, 78.0, 40.0]]
MODEL = ["model=retinanet_tiny", "model.num_scales=1", "model.aspect_ratios=[1.0]"]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "hand"
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.full((128, 128, 3), 127, np.uint8)).save(root / "images" / "a.png")
    anns = [{"id": i + 1, "image_id": 1, "category_id": i + 1, "iscrowd": 0,
             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": 256.0}
            for i, b in enumerate(BOXES)]
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 128, "height": 128}],
            "annotations": anns,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    (root / "ann.json").write_text(json.dumps(coco))
    return root


def _data_overrides(root: Path) -> list[str]:
    return [f"data.root={root}", "data.train_ann=ann.json", "data.train_images=images",
            "data.val_ann=ann.json", "data.val_images=images",
            "data.val_transforms.min_size=128", "data.val_transforms.max_size=128"]


def _model():
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("stats", overrides=MODEL)
    return build_model(cfg.model, cfg.loss, 2).eval()


def test_counts_by_hand_and_as_the_model_trains():
    model = _model()
    image = torch.full((3, 128, 128), 127, dtype=torch.uint8)
    target = {"boxes": torch.tensor(BOXES), "labels": torch.tensor([0, 1]),
              "orig_size": (128, 128)}
    counts = count_image(model, image, target)
    assert (counts.anchors, counts.positive, counts.ignored, counts.negative) == (341, 2, 1, 338)
    assert counts.positives_per_object == [1, 1] and counts.areas == [256.0, 256.0]
    # the same positives as its training loss
    model.train()
    assert model([image], [target]).stats["num_pos"].item() == counts.positive


def test_cli_writes_stats_json_and_md(dataset: Path, tmp_path: Path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "retina.cli.stats", *MODEL, *_data_overrides(dataset),
         f"out={out}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["images"] == 1 and stats["objects"] == 2
    assert stats["anchors_per_image"]["mean"] == 341
    assert stats["positive_anchors_per_image"]["max"] == 2
    assert stats["ignored_anchors_per_image"]["p50"] == 1
    assert stats["negative_anchors_per_image"]["min"] == 338
    assert stats["negative_to_positive"] == 169.0
    assert stats["objects_by_size"] == {"small": 2, "medium": 0, "large": 0}
    assert stats["objects_by_class"] == {"a": 1, "b": 1}
    assert "negative:positive anchors = 169:1" in (out / "stats.md").read_text()


def test_cli_bad_argument_is_one_line(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "retina.cli.stats", "images=0",
                           f"data.root={tmp_path / 'nope'}", f"out={tmp_path / 'o'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "images" in proc.stderr


def test_loss_shares():
    shares = loss_shares(torch.tensor([2.0, 2.0]), torch.tensor([1.0] * 10 + [6.0] * 0))
    assert shares == {"positives": pytest.approx(4 / 14), "hardest_10pct_negatives":
                      pytest.approx(1 / 14)}
    neg = torch.tensor([0.1] * 18 + [5.0, 5.0])
    assert loss_shares(torch.tensor([0.0]), neg)["hardest_10pct_negatives"] == pytest.approx(
        10 / 11.8)

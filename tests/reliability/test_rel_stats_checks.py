"""``retina-stats`` and ``retina-plot loss-cdf`` check a checkpoint's categories and the device
as ``retina-eval`` does, and write strict JSON (issue 23)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from relhelp import IMAGE_SIZE

from retina.data.shapes import make_shapes_dataset

SIZES = [f"data.val_transforms.{k}={IMAGE_SIZE}" for k in ("min_size", "max_size")]


@pytest.fixture(scope="module")
def five_classes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("five") / "shapes5"
    return make_shapes_dataset(out, train=2, val=2, size=IMAGE_SIZE, num_classes=5, workers=1)


def _stats(checkpoint: Path | None, data: Path, out: Path, *extra: str) -> list[str]:
    ckpt = [] if checkpoint is None else [f"checkpoint={checkpoint}"]
    return [*ckpt, f"data.root={data}", "split=val", "images=2", f"out={out}", *SIZES, *extra]


def _loss_cdf(checkpoint: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["loss-cdf", f"checkpoint={checkpoint}", "data=shapes", f"data.root={data}",
            "images=2", f"out={out}", *SIZES, *extra]


def _plot_error(result) -> str:
    assert result.rc == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("retina-plot loss-cdf: "), result.stderr
    return lines[0]


def test_stats_checks_the_checkpoints_categories(cli, reference_run, five_classes, tmp_path):
    ckpt = reference_run["dir"] / "checkpoints" / "last.pt"
    out = tmp_path / "stats"
    result = cli.run("retina-stats", _stats(ckpt, five_classes, out), cwd=tmp_path)
    result.assert_clean_error("do not match the checkpoint's", str(ckpt))
    assert not (out / "stats.json").exists()  # Hydra's run folder (out) holds only its log


def test_loss_cdf_checks_the_checkpoints_categories(cli, reference_run, five_classes, tmp_path):
    ckpt = reference_run["dir"] / "checkpoints" / "last.pt"
    out = tmp_path / "cdf.png"
    line = _plot_error(cli.run("retina-plot", _loss_cdf(ckpt, five_classes, out), cwd=tmp_path))
    assert "do not match the checkpoint's" in line and "labels must lie" not in line
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu(cli, reference_run, tiny_shapes, tmp_path):
    ckpt = reference_run["dir"] / "checkpoints" / "last.pt"
    stats = cli.run("retina-stats", _stats(ckpt, tiny_shapes, tmp_path / "s", "device=cuda"),
                    cwd=tmp_path)  # fmt: skip
    stats.assert_clean_error("device: cuda was asked for but no CUDA device is available")
    cdf = cli.run("retina-plot", _loss_cdf(ckpt, tiny_shapes, tmp_path / "c.png", "device=cuda"),
                  cwd=tmp_path)  # fmt: skip
    assert "no CUDA device is available" in _plot_error(cdf)


def test_stats_of_an_empty_dataset_is_strict_json(cli, shapes_copy, tmp_path):
    ann = shapes_copy / "annotations" / "instances_val.json"
    coco = json.loads(ann.read_text())
    ann.write_text(json.dumps({**coco, "images": [], "annotations": []}))
    out = tmp_path / "stats"
    result = cli.run("retina-stats", _stats(None, shapes_copy, out), cwd=tmp_path)
    assert result.rc == 0, result.stderr[-3000:]

    def refuse(constant: str) -> None:
        raise AssertionError(f"stats.json holds {constant}")

    stats = json.loads((out / "stats.json").read_text(), parse_constant=refuse)
    assert stats["images"] == 0 and stats["negative_to_positive"] is None

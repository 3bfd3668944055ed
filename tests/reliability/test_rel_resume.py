"""Resume is explicit about what it keeps: a change the checkpoint would silently override
(LR, optimizer, model, categories) stops with one line; ``train.resume_reset=optim`` rebuilds
the optimizer and schedule from the new config; honoured keys (``train.max_iter``) apply."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from relhelp import load_raw, train_args


@pytest.fixture
def run_copy(reference_run, tmp_path) -> Path:
    return Path(shutil.copytree(reference_run["dir"], tmp_path / "run"))


def _resume(cli, data, run_dir, **overrides):
    args = train_args(data, run_dir, **{"train.resume": "true", **overrides})
    return cli.run("retina-train", args, cwd=run_dir.parent)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"optim.base_lr": 0.001}, "optim.base_lr"),
        ({"optim.no_decay_norm_bias": "true"}, "optim.no_decay_norm_bias"),
        ({"optim.optimizer._target_": "torch.optim.AdamW", "~optim.optimizer.momentum": None},
         "optim.optimizer._target_"),
        ({"model.fpn_channels": 8}, "model.fpn_channels"),
        ({"loss.gamma": 1.0}, "loss.gamma"),
    ],
)  # fmt: skip
def test_resume_refuses_a_change_it_cannot_honour(cli, tiny_shapes, run_copy, override, key):
    args = train_args(tiny_shapes, run_copy, **{"train.resume": "true", "train.max_iter": 6})
    args += [k if v is None else f"{k}={v}" for k, v in override.items()]
    before = (run_copy / "checkpoints" / "last.pt").read_bytes()
    result = cli.run("retina-train", args, cwd=run_copy.parent)
    result.assert_clean_error("cannot resume with changed", key)
    assert (run_copy / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_reset_optim_uses_the_new_lr(cli, tiny_shapes, run_copy):
    old = load_raw(run_copy / "checkpoints" / "last.pt")
    result = _resume(
        cli, tiny_shapes, run_copy,
        **{"optim.base_lr": 0.001, "train.resume_reset": "optim", "train.max_iter": 6},
    )  # fmt: skip
    assert result.rc == 0, result.stderr[-3000:]
    new = load_raw(run_copy / "checkpoints" / "last.pt")
    assert new["iteration"] == 6
    reference = old["config"]["optim"]["reference_batch_size"]
    assert old["config"]["optim"]["base_lr"] != 0.001
    assert new["scheduler"]["base_lrs"] == pytest.approx([0.001 * 2 / reference])
    assert new["config"]["optim"]["base_lr"] == 0.001
    metrics = json.loads((run_copy / "metrics.json").read_text())
    assert metrics["config"]["optim"]["base_lr"] == 0.001


def test_resume_honours_max_iter(cli, tiny_shapes, run_copy):
    result = _resume(cli, tiny_shapes, run_copy, **{"train.max_iter": 5})
    assert result.rc == 0, result.stderr[-3000:]
    assert load_raw(run_copy / "checkpoints" / "last.pt")["iteration"] == 5


def test_resume_checks_category_names(cli, shapes_copy, reference_run, tmp_path):
    run_dir = Path(shutil.copytree(reference_run["dir"], tmp_path / "run"))
    for split in ("train", "val"):
        ann = shapes_copy / "annotations" / f"instances_{split}.json"
        coco = json.loads(ann.read_text())
        coco["categories"][0]["name"], coco["categories"][1]["name"] = (
            coco["categories"][1]["name"], coco["categories"][0]["name"],
        )  # fmt: skip
        ann.write_text(json.dumps(coco))
    result = _resume(cli, shapes_copy, run_dir, **{"train.max_iter": 6})
    result.assert_clean_error("do not match the checkpoint's")

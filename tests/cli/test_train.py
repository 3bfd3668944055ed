"""``retina-train`` through its command line: a few iterations on generated shapes data (the
session's ``shapes_root``), what the run directory holds, and one-line errors for bad
overrides."""

from __future__ import annotations

import json

import pytest
import torch

from retina.engine.checkpoint import load_checkpoint
from retina.ops.focal_backend import resolved_backend

SMALL = [
    "train.batch_size=2",
    "train.max_iter=3",
    "train.checkpoint_period=2",
    "train.eval_period=0",
    "train.num_workers=0",
    "train.log_period=1",
    "train.eval_batch_size=4",
    "train.vis_images=1",
    "schedule.steps=[2]",
    "schedule.warmup_iters=1",
    "data.train_transforms.min_size=128",
    "data.train_transforms.max_size=128",
    "data.val_transforms.min_size=128",
    "data.val_transforms.max_size=128",
]


def test_few_iterations_through_the_cli(shapes_root, tmp_path, run_main):
    from retina.cli.eval import main as eval_main
    from retina.cli.train import main as train_main

    run_dir = tmp_path / "run"
    proc = run_main(train_main, "retina-train", f"data.root={shapes_root}",
                    f"hydra.run.dir={run_dir}", *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs",
                "ARm", "ARl"):  # fmt: skip
        assert isinstance(metrics[key], float)
    assert set(metrics["per_category"]) == {"circle", "square", "triangle"}
    assert metrics["config"]["train"]["max_iter"] == 3
    assert metrics["config"]["data"]["root"] == str(shapes_root)
    # the loss's backend choice (loss.backend=auto) is recorded as what it resolved to
    assert metrics["config"]["loss"]["backend"] == "auto"
    assert metrics["focal_backend"] == resolved_backend("auto", "cpu")
    assert "AP50" in proc.stdout and "circle" in proc.stdout  # the printed COCO table
    assert (run_dir / "coco_results.json").is_file()

    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["last.pt", "model_0000002.pt", "model_0000003.pt"]
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    for key in ("model", "optimizer", "scheduler", "scaler", "iteration", "rng",
                "data_position", "cat_ids", "class_names", "config"):  # fmt: skip
        assert key in state, key
    assert state["iteration"] == 3 and state["cat_ids"] == [1, 2, 3]
    assert state["focal_backend"] == metrics["focal_backend"]
    assert state["config"]["model"]["_target_"] == "retina.modeling.build_retinanet"
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss_cls", "train/loss_box_reg", "train/lr", "train/num_pos",
            "train/img_per_s", "val/AP", "val/AP50", "val/AR100"} <= tags  # fmt: skip
    assert [e.step for e in events.Scalars("train/loss_cls")] == [1, 2, 3]
    assert any(tag.startswith("val/detections") for tag in events.Tags()["images"])

    # retina-eval on the checkpoint scores the same model on the same val split identically
    eval_dir = tmp_path / "eval"
    evaluated = run_main(eval_main, "retina-eval",
                         f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}",
                         f"hydra.run.dir={eval_dir}", "eval.num_workers=0")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    again = json.loads((eval_dir / "metrics.json").read_text())
    for key in ("AP", "AP50", "AR100"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.not_a_key=1", "train.not_a_key"),  # refused by Hydra itself
        ("model.prior_prob=1.5", "model.prior_prob"),  # refused by retina.config
    ],
)
def test_bad_override_is_one_line(tmp_path, run_main, override, expected):
    from retina.cli.train import main

    proc = run_main(main, "retina-train", override, f"paths.data_dir={tmp_path}",
                    f"hydra.run.dir={tmp_path / 'r'}")
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("retina-train: error: ") and expected in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "shapes").exists()  # nothing was generated before the check
    log = tmp_path / "r" / "train.log"
    if log.exists():  # the run folder Hydra made says why the run stopped
        assert lines[0] in log.read_text()
    else:
        assert expected == "train.not_a_key"  # Hydra refused before making a folder

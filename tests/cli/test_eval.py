"""retina-eval end to end: a random-weight tiny model's checkpoint on generated shapes data."""

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import instantiate

from retina.data import CocoDetection, make_shapes_dataset
from retina.engine.checkpoint import save_checkpoint
from retina.engine.evaluation import METRIC_KEYS

REPO = Path(__file__).resolve().parents[2]


def make_checkpoint(root: Path, num_classes: int = 3, size: int = 96) -> Path:
    """Generate a tiny shapes dataset under ``root/shapes`` and a random tiny-model
    checkpoint shaped like the trainer's (resolved config with model, loss and data)."""
    data_root = root / "shapes"
    make_shapes_dataset(data_root, train=0, val=4, size=size, num_classes=num_classes, workers=1)
    model_cfg = yaml.safe_load((REPO / "configs/model/retinanet_tiny.yaml").read_text())
    del model_cfg["defaults"]  # the choices only; the constructors default the rest
    loss_cfg = yaml.safe_load((REPO / "configs/loss/focal.yaml").read_text())
    data_cfg = yaml.safe_load((REPO / "configs/data/shapes.yaml").read_text())
    data_cfg.update(root=str(data_root), generator=None)
    data_cfg["val_transforms"].update(min_size=128, max_size=128)  # != image size: rescaling
    dataset = CocoDetection(data_root / data_cfg["val_ann"], data_root / data_cfg["val_images"])
    torch.manual_seed(0)
    model = instantiate(model_cfg, num_classes=dataset.num_classes, cls_loss=None)
    state = {
        "model": model.state_dict(),
        **dataset.label_mapping(),
        "config": {"model": model_cfg, "loss": loss_cfg, "data": data_cfg},
    }
    return save_checkpoint(state, root / "checkpoints", iteration=3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_cli")
    return root, make_checkpoint(root)


def test_eval_writes_results_metrics_and_table(setup, run_main):
    from retina.cli.eval import main

    root, ckpt = setup
    run_dir = root / "run"
    proc = run_main(main, "retina-eval", f"checkpoint={ckpt}", f"hydra.run.dir={run_dir}",
                    "eval.num_workers=0", "eval.score_thresh=0.005")
    assert proc.returncode == 0, proc.stderr
    assert "AR100" in proc.stdout and "circle" in proc.stdout

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(metrics)
    assert set(metrics["per_category"]) == {"circle", "square", "triangle"}
    assert metrics["iteration"] == 3 and metrics["config"]["model"]["depth"] == 10
    results = json.loads((run_dir / "coco_results.json").read_text())
    assert results and {r["category_id"] for r in results} <= {1, 2, 3}

    # The CLI's numbers are pycocotools' on the results file it wrote, in percent.
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(root / "shapes/annotations/instances_val.json"))
        coco_eval = COCOeval(gt, gt.loadRes(str(run_dir / "coco_results.json")), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    expected = [s * 100 if s >= 0 else -1.0 for s in coco_eval.stats]
    assert [metrics[k] for k in METRIC_KEYS] == pytest.approx(expected, abs=1e-9)
    # Boxes are in the original 96 px images although the model saw 128 px inputs.
    assert max(max(r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]) for r in results) \
        <= 96.0 + 1e-3


def run_in_process(body, config_name: str, overrides: list[str], run_dir: Path):
    """Compose the config as the CLI would and run its body under the CLI's error handling
    (the error paths, without paying a subprocess start each)."""
    from hydra import compose, initialize_config_dir

    from retina.cli.common import exit_on_user_error as exit_on_cli_error

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    with exit_on_cli_error(f"retina-{config_name}"):
        return body(cfg, run_dir)


def eval_error(overrides: list[str], run_dir: Path, capsys) -> str:
    from retina.cli.eval import evaluate_checkpoint

    with pytest.raises(SystemExit) as info:
        run_in_process(evaluate_checkpoint, "eval", overrides, run_dir)
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("retina-eval: error: ") and "\n" not in err, err
    return err


def test_eval_corrupt_checkpoint(setup, tmp_path, capsys):
    _, ckpt = setup
    bad = tmp_path / "bad.pt"
    bad.write_bytes(ckpt.read_bytes()[:1000])
    assert f"{bad}: " in eval_error([f"checkpoint={bad}"], tmp_path, capsys)
    assert "checkpoint: is required" in eval_error([], tmp_path, capsys)


def test_eval_label_mapping_mismatch(setup, tmp_path, capsys):
    _, ckpt = setup
    other = tmp_path / "two_classes"
    make_shapes_dataset(other, train=0, val=2, size=64, num_classes=2, workers=1)
    err = eval_error([f"checkpoint={ckpt}", "data=shapes", f"data.root={other}"], tmp_path, capsys)
    assert "[1 'circle', 2 'square'] do not match the checkpoint's [1 'circle', 2 'square'," in err


@pytest.mark.parametrize(
    "override, needle",
    [
        ("eval.batch_size=0", "eval.batch_size"),
        ("+eval.typo=1", "eval.typo: unknown key"),
        ("eval.score_thresh=2", "eval.score_thresh"),
        ("data=coco", "data.root: directory"),
    ],
)
def test_eval_bad_values(setup, tmp_path, capsys, override, needle):
    _, ckpt = setup
    assert needle in eval_error([f"checkpoint={ckpt}", override], tmp_path, capsys)


def test_eval_optional_backend_missing(setup, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # hidden: its import fails
    _, ckpt = setup
    err = eval_error([f"checkpoint={ckpt}", "eval.backend=faster_coco_eval"], tmp_path, capsys)
    assert "needs the faster-coco-eval package" in err


def test_eval_unwritable_run_dir(setup, tmp_path, capsys):
    _, ckpt = setup
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = eval_error([f"checkpoint={ckpt}", "eval.num_workers=0"], blocker / "run", capsys)
    # refused when its lock is taken, before any inference
    assert f"{blocker / 'run'}: cannot use as run directory (Not a directory)" in err

"""retina-predict: drawn PNGs and detections.json from a random-weight tiny checkpoint."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra.utils import instantiate
from PIL import Image

from retina.cli.predict import _output_names
from retina.engine.checkpoint import save_checkpoint
from retina.utils.vis import draw_detections

REPO = Path(__file__).resolve().parents[2]
NAMES = ["circle", "square", "triangle"]
CAT_IDS = [1, 5, 9]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A checkpoint (tiny model, val resize to 128 px) and a folder of three images."""
    root = tmp_path_factory.mktemp("predict_cli")
    model_cfg = yaml.safe_load((REPO / "configs/model/retinanet_tiny.yaml").read_text())
    del model_cfg["defaults"]  # the choices only; the constructors default the rest
    data_cfg = yaml.safe_load((REPO / "configs/data/shapes.yaml").read_text())
    data_cfg["val_transforms"].update(min_size=128, max_size=160)
    torch.manual_seed(0)
    model = instantiate(model_cfg, num_classes=3, cls_loss=None)
    state = {
        "model": model.state_dict(), "cat_ids": CAT_IDS, "class_names": NAMES,
        "config": {"model": model_cfg, "data": data_cfg},
    }  # fmt: skip
    ckpt = save_checkpoint(state, root / "checkpoints", iteration=1)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(rng.integers(0, 255, (100, 60), dtype=np.uint8)).save(images / "b.jpg")
    Image.fromarray(rng.integers(0, 255, (64, 64, 4), dtype=np.uint8)).save(images / "c.png")
    (images / "notes.txt").write_text("not an image")
    return root, ckpt, images


def test_predict_folder(setup, run_main):
    from retina.cli.predict import main

    root, ckpt, images = setup
    out = root / "out"
    proc = run_main(main, "retina-predict", f"checkpoint={ckpt}", f"input={images}",
                    f"output={out}", "score_thresh=0.0", f"hydra.run.dir={root / 'run'}")
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "detections.json").read_text())
    assert [r["output"] for r in result["images"]] == ["a.png.png", "b.jpg.png", "c.png.png"]
    for record in result["images"]:
        drawn = Image.open(out / record["output"])
        assert drawn.size == (record["width"], record["height"]) and drawn.mode == "RGB"
        assert record["detections"], "score_thresh=0 keeps every detection of the model"
        for det in record["detections"]:
            x1, y1, x2, y2 = det["box"]
            assert 0 <= x1 <= x2 <= record["width"] and 0 <= y1 <= y2 <= record["height"]
            assert det["class_name"] == NAMES[det["label"]]
            assert det["category_id"] == CAT_IDS[det["label"]]
    assert (result["images"][0]["height"], result["images"][0]["width"]) == (80, 120)


def run_predict(overrides: list[str], tmp_path: Path):
    from hydra import compose, initialize_config_dir

    from retina.cli.common import exit_on_user_error as exit_on_cli_error
    from retina.cli.predict import predict

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="predict", overrides=overrides)
    with exit_on_cli_error("retina-predict"):
        return predict(cfg, tmp_path)


def test_predict_single_image_with_threshold(setup, tmp_path):
    _, ckpt, images = setup
    result = run_predict(
        [f"checkpoint={ckpt}", f"input={images / 'b.jpg'}", f"output={tmp_path}",
         "score_thresh=0.0102"], tmp_path,
    )  # fmt: skip
    assert len(result["images"]) == 1 and (tmp_path / "b.jpg.png").is_file()
    assert all(d["score"] >= 0.0102 for d in result["images"][0]["detections"])


def predict_error(overrides: list[str], tmp_path: Path, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        run_predict(overrides, tmp_path)
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("retina-predict: error: ") and "\n" not in err, err
    return err


def test_predict_bad_input(setup, tmp_path, capsys):
    _, ckpt, images = setup
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    base = [f"checkpoint={ckpt}", f"output={tmp_path / 'o'}"]
    assert f"{broken / 'x.png'}: cannot read image" in predict_error(
        [*base, f"input={broken}"], tmp_path, capsys
    )
    assert "input: " in predict_error([*base, f"input={tmp_path / 'nope'}"], tmp_path, capsys)
    (tmp_path / "empty").mkdir()
    err = predict_error([*base, f"input={tmp_path / 'empty'}"], tmp_path, capsys)
    assert "input: " in err and "no images" in err
    err = predict_error([f"checkpoint={ckpt}", f"input={images}", f"output={images}"],
                        tmp_path, capsys)  # fmt: skip
    assert "output: " in err
    err = predict_error([*base, f"input={images}", "score_thresh=2"], tmp_path, capsys)
    assert "score_thresh" in err
    assert "checkpoint: is required" in predict_error(
        [f"input={images}", f"output={tmp_path}"], tmp_path, capsys
    )


def test_draw_detections_marks_the_box():
    image = np.zeros((50, 80, 3), dtype=np.uint8)
    det = {"box": [10.0, 20.0, 60.0, 45.0], "score": 0.9, "label": 1, "class_name": "square"}
    drawn = np.asarray(draw_detections(image, [det]))
    assert drawn.shape == image.shape
    assert drawn[45, 30].tolist() == [60, 180, 75]  # bottom edge in label 1's colour
    assert drawn[30, 35].tolist() == [0, 0, 0]  # inside the box untouched
    assert not np.array_equal(np.asarray(draw_detections(image, [])), drawn)


def test_output_names_avoid_collisions():
    paths = [Path("x/a.png"), Path("x/a.jpg"), Path("x/b.jpeg")]
    assert _output_names(paths) == ["a.png.png", "a.jpg.png", "b.jpeg.png"]

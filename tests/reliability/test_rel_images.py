"""Images as they really are (issue #16): 16-bit and float images decoded faithfully in
dataset loading and ``retina-predict``, output names that never collide, and a decompression
bomb refused with one line."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from retina.cli.predict import _output_names
from retina.data import CocoDetection
from retina.data.images import read_image

REPO = Path(__file__).resolve().parents[2]
RAMP = np.linspace(0, 65535, 48 * 32).reshape(32, 48).astype(np.uint16)
EXPECTED = np.rint(RAMP / 257).astype(np.uint8)


def _deep_images(folder: Path) -> dict[str, np.ndarray]:
    """A 16-bit PNG and two float TIFFs (values in [0, 1] and in [-50, 4000]); the expected
    8-bit gray of each."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RAMP).save(folder / "deep.png")
    unit = RAMP.astype(np.float32) / 65535
    Image.fromarray(unit).save(folder / "unit.tif")
    wide = unit * 4050 - 50
    Image.fromarray(wide).save(folder / "wide.tif")
    unit_expected = np.rint(unit.astype(np.float64) * 255).astype(np.uint8)
    return {"deep.png": EXPECTED, "unit.tif": unit_expected, "wide.tif": unit_expected}


def test_predict_reads_deep_images_faithfully(tmp_path):
    for name, expected in _deep_images(tmp_path).items():
        gray = read_image(tmp_path / name)
        assert gray.dtype == np.uint8 and gray.shape == (32, 48, 3)
        assert np.abs(gray[:, :, 0].astype(int) - expected).max() <= 1, name
        assert gray.min() <= 1 and gray.max() >= 254, f"{name}: range lost"


def test_dataset_loading_reads_deep_images_faithfully(tmp_path):
    expected = _deep_images(tmp_path / "images")
    names = sorted(expected)
    data = {
        "images": [{"id": i, "file_name": n, "width": 48, "height": 32}
                   for i, n in enumerate(names, start=1)],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]}],
        "categories": [{"id": 1, "name": "x"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    dataset = CocoDetection(tmp_path / "ann.json", tmp_path / "images", on_broken="skip")
    for index, name in enumerate(names):
        image, _ = dataset[index]
        diff = np.abs(image[0].numpy().astype(int) - expected[name]).max()
        assert diff <= 1, f"{name}: decoded {image.min()}..{image.max()}"
    assert dataset.num_broken == 0


def test_output_names_never_collide():
    paths = [Path("in/a.png"), Path("in/a.jpg"), Path("in/a_png.png"), Path("in/a_jpg.png")]
    names = _output_names(paths)
    assert len(set(names)) == len(names), names


@settings(max_examples=200, deadline=None)
@given(st.sets(st.from_regex(r"[a-z_]{1,3}(\.(png|jpg|PNG|jpeg))?(\.png)?", fullmatch=True),
               min_size=1, max_size=12))
def test_output_names_are_injective(names):
    outputs = _output_names([Path("folder") / n for n in sorted(names)])
    assert len(set(outputs)) == len(outputs)
    assert all(o.endswith(".png") and "/" not in o for o in outputs)


def _png_bomb(path: Path, side: int = 40_000) -> None:
    """A valid PNG header claiming ``side`` x ``side`` pixels (1.6 G, beyond PIL's limit),
    with a few bytes of data: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from retina.engine.checkpoint import save_checkpoint

    model_cfg = OmegaConf.to_container(OmegaConf.load(REPO / "configs/model/retinanet_tiny.yaml"))
    del model_cfg["defaults"]  # the choices only; the constructors default the rest
    model_cfg["fpn_channels"] = 16
    model = instantiate(model_cfg, num_classes=1, cls_loss=None)
    state = {"model": model.state_dict(), "cat_ids": [1], "class_names": ["x"],
             "config": {"model": model_cfg, "data": {}}}
    return save_checkpoint(state, tmp_path / "checkpoints", iteration=1)


def test_predict_refuses_a_decompression_bomb_with_one_line(tmp_path, checkpoint, capsys):
    from hydra import compose, initialize_config_dir

    from retina.cli.common import exit_on_user_error as exit_on_cli_error
    from retina.cli.predict import predict

    folder = tmp_path / "in"
    folder.mkdir()
    _png_bomb(folder / "bomb.png")
    overrides = [f"checkpoint={checkpoint}", f"input={folder}", f"output={tmp_path / 'out'}"]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="predict", overrides=overrides)
    with pytest.raises(SystemExit) as info, exit_on_cli_error("retina-predict"):
        predict(cfg, tmp_path)
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"retina-predict: error: {folder / 'bomb.png'}: cannot read image")
    assert "decompression" in err.lower() and "\n" not in err

"""read_image / image_size: decoding by content, every mode to RGB uint8, EXIF orientation,
high-depth scaling and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from retina.data.images import EXIF_ORIENTATION, image_header, image_size, read_image, upright_box
from retina.errors import DataError

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 20, 3), dtype=np.uint8)


def test_png_named_jpg_decodes_by_content(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(RGB).save(path, format="PNG")
    assert np.array_equal(read_image(path), RGB)  # lossless: it was not read as a JPEG
    assert image_size(path) == (20, 12)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "1", "P", "CMYK", "I;16", "F"])
def test_every_mode_becomes_rgb_uint8(tmp_path, mode):
    base = Image.fromarray(RGB)
    if mode == "I;16":
        image = Image.fromarray(RGB[:, :, 0].astype(np.uint16) * 257)
    elif mode == "F":
        image = Image.fromarray(RGB[:, :, 0].astype(np.float32) / 255.0)
    else:
        image = base.convert(mode)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "F") else "x.png")
    image.save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (12, 20, 3)
    if mode in ("RGBA", "P"):
        assert np.array_equal(out, np.asarray(base.convert(mode).convert("RGB")))
    if mode in ("L", "LA", "I;16", "F"):
        expected = RGB[:, :, 0] if mode in ("I;16", "F") else np.asarray(base.convert("L"))
        assert np.array_equal(out, np.repeat(expected[:, :, None], 3, axis=2))


def test_16_bit_scaled_by_type_range(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 8, dtype=np.float64).reshape(8, 64).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    out = read_image(path)[:, :, 0]
    assert np.array_equal(out, np.rint(ramp / 257).astype(np.uint8))
    assert out.min() == 0 and out.max() == 255 and len(np.unique(out)) > 100


def test_float_scaled_by_its_range_and_nan_refused(tmp_path):
    values = np.linspace(-1000.0, 3000.0, 40, dtype=np.float32).reshape(4, 10)
    path = tmp_path / "f.tif"
    Image.fromarray(values).save(path)
    out = read_image(path)[:, :, 0].astype(int)
    assert out.min() == 0 and out.max() == 255 and np.all(np.diff(out.ravel()) >= 0)
    values[0, 0] = np.nan
    Image.fromarray(values).save(path)
    with pytest.raises(DataError, match=r"f\.tif: cannot read image .*NaN"):
        read_image(path)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_like_pil(tmp_path, orientation):
    path = tmp_path / "o.jpg"
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    Image.fromarray(RGB).save(path, format="PNG", exif=exif)  # PNG: lossless comparison
    with Image.open(path) as handle:
        expected = np.asarray(ImageOps.exif_transpose(handle).convert("RGB"))
    out = read_image(path)
    assert np.array_equal(out, expected)
    assert image_size(path) == (out.shape[1], out.shape[0])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_box_follows_the_pixels(tmp_path, orientation):
    """A box on the stored pixels, turned by upright_box, covers the same pixels upright."""
    stored = np.zeros((12, 20, 3), dtype=np.uint8)
    stored[2:5, 13:19] = 255  # x 13..19, y 2..5
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    path = tmp_path / "o.png"
    Image.fromarray(stored).save(path, format="PNG", exif=exif)
    assert image_header(path) == ((20, 12), orientation)
    x1, y1, x2, y2 = (int(v) for v in upright_box((13, 2, 19, 5), (20, 12), orientation))
    upright = read_image(path)[..., 0] > 0
    assert upright[y1:y2, x1:x2].all() and upright.sum() == (x2 - x1) * (y2 - y1) == 18


@pytest.mark.parametrize("content", [b"", b"garbage", b"\x89PNG\r\n\x1a\n truncated"])
def test_unreadable_is_one_line_naming_the_file(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    for fn in (read_image, image_size):
        with pytest.raises(DataError) as info:
            fn(path)
        assert str(info.value).startswith(f"{path}: cannot read image") or not content
        assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="image file is missing"):
        read_image(tmp_path / "nope.png")


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(RGB).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # 240 pixels > 2 * 50
    for fn in (read_image, image_size):
        with pytest.raises(DataError, match=r"big\.png: cannot read image \(.*decompression"):
            fn(path)

"""The one image reader of the project: datasets, ``retina-check-data``, the converters and
``retina-predict`` all read pixels with :func:`read_image` and sizes with :func:`image_size`.

- The format is found from the file's content, never its extension (a PNG named ``.jpg``
  reads as a PNG).
- Every mode becomes RGB uint8: grayscale, palette, CMYK and the rest through PIL; alpha is
  dropped (not composited). 16-bit images are scaled by the type's range (``v / 257``);
  32-bit integer images holding 16-bit values likewise; float images in ``[0, 1]`` by 255,
  other float images by their own minimum..maximum. Non-finite floats and integers
  beyond 16 bits are refused.
- The EXIF orientation tag is applied (the image is turned upright, as a photo viewer, cv2,
  detectron2 and ultralytics show it), so boxes are in the upright frame. :func:`image_size`
  reports that frame's size from the header without decoding.
- Anything unreadable, including a decompression bomb (more than twice PIL's
  ``MAX_IMAGE_PIXELS``), raises :class:`~retina.errors.DataError` with one line that
  names the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from retina.errors import DataError

__all__ = ["EXIF_ORIENTATION", "IMAGE_SUFFIXES", "SWAPS_AXES", "image_header", "image_size",
           "read_image", "upright_box"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
"""File suffixes (lower case) taken as images when a folder is listed (``retina-predict``,
the converters); :func:`read_image` itself goes by the content."""

EXIF_ORIENTATION = 0x0112
"""EXIF tag of the orientation (1 = upright; 5..8 swap width and height)."""

SWAPS_AXES = frozenset({5, 6, 7, 8})
"""EXIF orientations whose upright image is the stored one turned by 90 degrees."""


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0].strip() if str(exc).strip() else ""
    return text or type(exc).__name__


def _orientation(handle: Any) -> int:
    try:
        value = handle.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is treated as no orientation
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _transpose(array: np.ndarray, orientation: int) -> np.ndarray:
    """``(H, W, C)`` stored pixels -> upright pixels for EXIF ``orientation`` 1..8."""
    if orientation in (2, 4, 5, 7):  # the mirrored ones: mirror first, then rotate
        array = array[:, ::-1]
    turns = {1: 0, 2: 0, 3: 2, 4: 2, 5: 1, 6: 3, 7: 3, 8: 1}[orientation]  # 90° counter-clockwise
    return np.ascontiguousarray(np.rot90(array, turns))


def _scale_to_uint8(values: np.ndarray, path: Path, mode: str) -> np.ndarray:
    """A high-depth ``(H, W)`` or ``(H, W, C)`` array -> uint8 by its range (see module doc)."""
    if np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"{path}: cannot read image (mode {mode} holds NaN or infinite "
                            "values)")
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        if lo >= 0.0 and hi <= 1.0:
            scaled = values * 255.0
        elif hi > lo:
            scaled = (values - lo) * (255.0 / (hi - lo))
        else:
            scaled = np.zeros_like(values)
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    values = values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise DataError(f"{path}: cannot read image (mode {mode} values "
                        f"{int(values.min())}..{int(values.max())} are not 8 or 16 bits)")
    return np.rint(values / 257.0).astype(np.uint8)


def _to_rgb(handle: Any, path: Path) -> np.ndarray:
    """A loaded PIL image -> ``(H, W, 3)`` uint8 in stored (not yet upright) orientation."""
    mode = handle.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        gray = _scale_to_uint8(np.asarray(handle), path, mode)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode != "RGB":
        handle = handle.convert("RGBA" if mode in ("P", "PA") else "RGB").convert("RGB")
    return np.asarray(handle, dtype=np.uint8)


def _open(path: Path) -> Any:
    from PIL import Image

    return Image.open(path)


def read_image(path: str | Path) -> np.ndarray:
    """The image at ``path`` as upright RGB ``(H, W, 3)`` uint8 (see the module docstring).

    Raises:
        DataError: one line naming ``path`` when the file is missing, not an image, corrupt,
            a decompression bomb, or of a depth that cannot be scaled.
    """
    path = Path(path)
    try:
        with _open(path) as handle:
            orientation = _orientation(handle)
            handle.load()
            array = _to_rgb(handle, path)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: image file is missing") from None
    except MemoryError:
        raise DataError(f"{path}: cannot read image (out of memory decoding it)") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise many types
        raise DataError(f"{path}: cannot read image ({_reason(exc)})") from None
    return _transpose(array, orientation) if orientation != 1 else array


def image_header(path: str | Path) -> tuple[tuple[int, int], int]:
    """``((width, height), orientation)``: the *stored* frame's size and the EXIF orientation
    (1..8, 1 when absent or broken), from the header (nothing decoded).

    Raises:
        DataError: as :func:`read_image`, for what the header already shows.
    """
    path = Path(path)
    try:
        with _open(path) as handle:
            width, height = handle.size
            orientation = _orientation(handle)
    except FileNotFoundError:
        raise DataError(f"{path}: image file is missing") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise many types
        raise DataError(f"{path}: cannot read image ({_reason(exc)})") from None
    return (width, height), orientation


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of :func:`read_image`'s result, from the header (nothing decoded).

    Raises:
        DataError: as :func:`read_image`, for what the header already shows.
    """
    (width, height), orientation = image_header(path)
    return (height, width) if orientation in SWAPS_AXES else (width, height)


def upright_box(box: tuple[float, float, float, float], stored_size: tuple[int, int],
                orientation: int) -> tuple[float, float, float, float]:
    """A box ``(x1, y1, x2, y2)`` drawn on the stored pixels of a ``stored_size``
    ``(width, height)`` image -> the same box on :func:`read_image`'s upright pixels, for EXIF
    ``orientation`` 1..8 (the transform of :func:`_transpose`, on continuous coordinates)."""
    x1, y1, x2, y2 = box
    width, height = stored_size
    if orientation in (2, 4, 5, 7):  # mirror left-right first
        x1, x2 = width - x2, width - x1
    turns = {1: 0, 2: 0, 3: 2, 4: 2, 5: 1, 6: 3, 7: 3, 8: 1}[orientation]
    for _ in range(turns):  # 90° counter-clockwise: (x, y) -> (y, W - x), size -> (H, W)
        x1, y1, x2, y2 = y1, width - x2, y2, width - x1
        width, height = height, width
    return x1, y1, x2, y2

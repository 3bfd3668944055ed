"""The focal loss paper's Table 1 ablations as data (Lin et al., ICCV 2017).

Blocks (a)-(d) are COCO minival AP / AP50 / AP75 in percent, RetinaNet with ResNet-50-FPN
and 600-pixel images, except block (d), which the paper ran with ResNet-101-FPN. Block (e) is
on COCO test-dev (arXiv v2 of the paper).

Blocks, as in the paper:
    a  α-balanced cross entropy (γ = 0), varying α.
    b  focal loss, varying γ with the best α for each γ.
    c  anchors: number of scales × number of aspect ratios per location (FL, γ = 2, α = .25).
    d  OHEM (with or without a 1:3 positive:negative ratio) against FL.
    e  speed/accuracy: ResNet-50/101-FPN at shorter sides 400-800 px, with AP by object size
       and inference time per image (ms, Nvidia M40, test-dev).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PaperRow", "SpeedRow", "TABLE1", "TABLE1_BLOCKS", "TABLE1E", "paper_rows"]


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's Table 1.

    Attributes:
        block: sub-table, one of ``"a"``, ``"b"``, ``"c"``, ``"d"``.
        setting: the row's swept values, e.g. ``{"gamma": 2.0, "alpha": 0.25}``; block (c)
            uses ``num_scales``/``num_ratios``; block (d) uses ``method`` (``"FL"``, ``"OHEM"``,
            ``"OHEM 1:3"``); the OHEM rows add ``batch_size`` (anchors per image kept) and
            ``nms_thresh`` (the NMS applied to the anchors before selecting the hardest).
        ap, ap50, ap75: COCO metrics in percent.
    """

    block: str
    setting: dict[str, float | int | str] = field(hash=False)
    ap: float
    ap50: float
    ap75: float

    def metrics(self) -> dict[str, float]:
        """The row's numbers under the metric names of ``metrics.json``."""
        return {"AP": self.ap, "AP50": self.ap50, "AP75": self.ap75}


def _rows(block: str, keys: tuple[str, ...], data: list[tuple]) -> tuple[PaperRow, ...]:
    n = len(keys)
    return tuple(
        PaperRow(block, dict(zip(keys, row[:n], strict=True)), *row[n:]) for row in data
    )


_A = _rows(
    "a",
    ("alpha",),
    [
        (0.10, 0.0, 0.0, 0.0),
        (0.25, 10.8, 16.0, 11.7),
        (0.50, 30.2, 46.7, 32.8),
        (0.75, 31.1, 49.4, 33.0),
        (0.90, 30.8, 49.7, 32.3),
        (0.99, 28.7, 47.4, 29.9),
        (0.999, 25.1, 41.7, 26.1),
    ],
)

_B = _rows(
    "b",
    ("gamma", "alpha"),
    [
        (0.0, 0.75, 31.1, 49.4, 33.0),
        (0.1, 0.75, 31.4, 49.9, 33.1),
        (0.2, 0.75, 31.9, 50.7, 33.4),
        (0.5, 0.50, 32.9, 51.7, 35.2),
        (1.0, 0.25, 33.7, 52.0, 36.2),
        (2.0, 0.25, 34.0, 52.5, 36.5),
        (5.0, 0.25, 32.2, 49.6, 34.8),
    ],
)

_C = _rows(
    "c",
    ("num_scales", "num_ratios"),
    [
        (1, 1, 30.3, 49.0, 31.8),
        (2, 1, 31.9, 50.0, 34.0),
        (3, 1, 31.8, 49.4, 33.7),
        (1, 3, 32.4, 52.3, 33.9),
        (2, 3, 34.2, 53.1, 36.5),
        (3, 3, 34.0, 52.5, 36.5),
        (4, 3, 33.8, 52.1, 36.2),
    ],
)

_D = _rows(
    "d",
    ("method", "batch_size", "nms_thresh"),
    [
        ("OHEM", 128, 0.7, 31.1, 47.2, 33.2),
        ("OHEM", 256, 0.7, 31.8, 48.8, 33.9),
        ("OHEM", 512, 0.7, 30.6, 47.0, 32.6),
        ("OHEM", 128, 0.5, 32.8, 50.3, 35.1),
        ("OHEM", 256, 0.5, 31.0, 47.4, 33.0),
        ("OHEM", 512, 0.5, 27.6, 42.0, 29.2),
        ("OHEM 1:3", 128, 0.5, 31.1, 47.2, 33.2),
        ("OHEM 1:3", 256, 0.5, 28.3, 42.4, 30.3),
        ("OHEM 1:3", 512, 0.5, 24.0, 35.5, 25.8),
    ],
) + (PaperRow("d", {"method": "FL"}, 36.0, 54.9, 38.7),)


@dataclass(frozen=True)
class SpeedRow:
    """One row of Table 1(e), the speed/accuracy trade-off (COCO test-dev).

    Attributes:
        depth: ResNet depth of the backbone (50 or 101).
        scale: shorter image side in pixels (400-800).
        ap, ap50, ap75, aps, apm, apl: COCO metrics in percent.
        ms: inference time per image in milliseconds (Nvidia M40, batch 1).
    """

    depth: int
    scale: int
    ap: float
    ap50: float
    ap75: float
    aps: float
    apm: float
    apl: float
    ms: float

    @property
    def setting(self) -> dict[str, int]:
        """The row's swept values."""
        return {"depth": self.depth, "scale": self.scale}

    def metrics(self) -> dict[str, float]:
        """The row's numbers under the metric names of ``metrics.json``."""
        return {"AP": self.ap, "AP50": self.ap50, "AP75": self.ap75, "APs": self.aps,
                "APm": self.apm, "APl": self.apl}


TABLE1E: tuple[SpeedRow, ...] = tuple(
    SpeedRow(*row)
    for row in [
        (50, 400, 30.5, 47.8, 32.7, 11.2, 33.8, 46.1, 64),
        (50, 500, 32.5, 50.9, 34.8, 13.9, 35.8, 46.7, 72),
        (50, 600, 34.3, 53.2, 36.9, 16.2, 37.4, 47.4, 98),
        (50, 700, 35.1, 54.2, 37.7, 18.0, 39.3, 46.4, 121),
        (50, 800, 35.7, 55.0, 38.5, 18.9, 38.9, 46.3, 153),
        (101, 400, 31.9, 49.5, 34.1, 11.6, 35.8, 48.5, 81),
        (101, 500, 34.4, 53.1, 36.8, 14.7, 38.5, 49.1, 90),
        (101, 600, 36.0, 55.2, 38.7, 17.4, 39.6, 49.7, 122),
        (101, 700, 37.1, 56.6, 39.8, 19.1, 40.6, 49.4, 154),
        (101, 800, 37.8, 57.5, 40.8, 20.2, 41.1, 49.2, 198),
    ]
)
"""Table 1(e): RetinaNet ResNet-50/101-FPN at scales 400-800, COCO test-dev, ms on an M40."""

TABLE1: dict[str, tuple[PaperRow, ...]] = {"a": _A, "b": _B, "c": _C, "d": _D}
"""Table 1 blocks (a)-(d), rows in the paper's order (block (e) is :data:`TABLE1E`)."""

TABLE1_BLOCKS: dict[str, str] = {
    "a": "(a) α-balanced CE, γ = 0",
    "b": "(b) focal loss, γ with its best α",
    "c": "(c) anchors: scales × aspect ratios per location",
    "d": "(d) FL vs OHEM (ResNet-101-FPN)",
    "e": "(e) speed vs accuracy (test-dev)",
}
"""Human-readable captions of the blocks."""


def paper_rows(block: str) -> tuple[PaperRow, ...]:
    """The rows of one block of Table 1.

    Raises:
        ValueError: ``block`` is not one of ``"a"``-``"d"``.
    """
    if block not in TABLE1:
        raise ValueError(f"paper block must be one of {sorted(TABLE1)}, got {block!r}")
    return TABLE1[block]

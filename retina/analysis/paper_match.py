"""Which row of the paper's Table 1 a run reproduces, and which block a sweep mirrors.

Used by :func:`retina.analysis.table.build_table` for the paper column of ``table.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from retina.analysis.axes import run_axes, varying_axes
from retina.analysis.paper import TABLE1, PaperRow
from retina.analysis.runs import Run

__all__ = ["close", "infer_block", "match_paper_row"]

_EXPERIMENT_BLOCKS = {
    "table1a_alpha_ce": "a",
    "table1b_gamma_alpha": "b",
    "table1c_anchors": "c",
    "table1d_ohem": "d",
    "table1e_speed": "e",
}


def close(a: Any, b: Any) -> bool:
    """Equal settings: strings case-insensitively, numbers to a relative 1e-6."""
    if isinstance(a, str) or isinstance(b, str):
        return str(a).lower() == str(b).lower()
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    except (TypeError, ValueError):
        return False


def _ohem_method(axes: dict[str, Any]) -> str | None:
    """Block (d)'s method: "FL", "OHEM" (unconstrained) or "OHEM 1:3" (positive fraction 1/4)."""
    loss = str(axes.get("loss", "")).lower()
    if "ohem" not in loss:
        return "FL" if "focal" in loss and "star" not in loss else None
    fraction = axes.get("ohem_pos_fraction")
    if fraction is None:
        return "OHEM"
    return "OHEM 1:3" if close(fraction, 0.25) else None


def match_paper_row(axes: dict[str, Any], block: str | None = None) -> PaperRow | None:
    """The paper's Table 1 row that a run reproduces, if any.

    A run matches a row when it keeps the paper's π = 0.01 (and 3 x 3 anchors outside block
    c) and every value of the row's setting equals the run's: γ, α for blocks a/b; scales and
    aspect ratios for c, where the loss must also be the paper's FL γ = 2, α = .25; for d the
    method, and for OHEM its batch, positive fraction (unconstrained or 1:3, i.e. 0.25) and
    NMS threshold. With ``block=None`` blocks b, a, c are tried in that order.

    Args:
        axes: the run's ablation values from :func:`retina.analysis.axes.run_axes`.
        block: ``"a"``-``"d"`` or ``None``.
    """
    blocks = [block] if block else ["b", "a", "c"]
    for name in blocks:
        for row in TABLE1.get(name, ()):
            if _matches(row, axes):
                return row
    return None


def _paper_defaults(row: PaperRow, axes: dict[str, Any]) -> bool:
    """Settings every paper row shares unless its block varies them: π = 0.01, 3 x 3 anchors."""
    if "prior_prob" in axes and not close(axes["prior_prob"], 0.01):
        return False
    if row.block == "c":
        return True
    return all(close(axes.get(k, 3), 3) for k in ("num_scales", "num_ratios"))


def _matches(row: PaperRow, axes: dict[str, Any]) -> bool:
    if not _paper_defaults(row, axes):
        return False
    if row.block in ("a", "b"):
        gamma = axes.get("gamma", 0.0 if row.block == "a" else None)
        want_gamma = row.setting.get("gamma", 0.0)
        return (
            gamma is not None
            and close(gamma, want_gamma)
            and close(axes.get("alpha"), row.setting["alpha"])
        )
    if row.block == "c":
        default_loss = close(axes.get("gamma", 2.0), 2.0) and close(
            axes.get("alpha", 0.25), 0.25
        )
        return (
            default_loss
            and close(axes.get("num_scales"), row.setting["num_scales"])
            and close(axes.get("num_ratios"), row.setting["num_ratios"])
        )
    method = _ohem_method(axes)
    if method != row.setting["method"]:
        return False
    if method == "FL":
        return close(axes.get("gamma"), 2.0) and close(axes.get("alpha"), 0.25)
    return close(axes.get("ohem_batch"), row.setting["batch_size"]) and close(
        axes.get("ohem_nms"), row.setting["nms_thresh"]
    )


def infer_block(runs: Sequence[Run]) -> str | None:
    """The paper block a sweep mirrors: from its experiment name, else from what it varies."""
    for run in runs:
        if run.experiment in _EXPERIMENT_BLOCKS:
            return _EXPERIMENT_BLOCKS[run.experiment]
        if run.experiment:
            return None
    varying = varying_axes([run_axes(r) for r in runs])
    if {"num_scales", "num_ratios"} & set(varying):
        return "c"
    if {"ohem_batch", "ohem_pos_fraction", "ohem_nms"} & set(varying):
        return "d"
    if "gamma" in varying:
        return "b"
    if "alpha" in varying:
        return "a"
    return None


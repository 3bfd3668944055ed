"""Figure 1 of the focal loss paper: FL(p_t) against p_t for several γ."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from retina.utils.io import save_figure_atomic

FIGURE1_GAMMAS: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 5.0)
"""The γ values of the paper's Figure 1."""


def focal_curves(
    gammas: Sequence[float] = FIGURE1_GAMMAS, num: int = 500
) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """FL(p_t) for ``num`` values of p_t in (0, 1], one curve per γ.

    Returns:
        ``p_t`` of shape (num,) and ``{γ: loss (num,)}``; the loss is
        :func:`retina.ops.sigmoid_focal_loss` of the logit log(p_t / (1 - p_t)) against target 1
        with ``alpha=None``, so the γ = 0 curve is the cross entropy -log(p_t).
    """
    import torch

    from retina.ops import sigmoid_focal_loss

    p_t = torch.linspace(1.0 / num, 1.0, num, dtype=torch.float64)
    logits = torch.logit(p_t.clamp(max=1.0 - 1e-12))
    targets = torch.ones_like(logits)
    curves = {
        float(g): sigmoid_focal_loss(logits, targets, alpha=None, gamma=float(g)).numpy()
        for g in gammas
    }
    return p_t.numpy(), curves


def plot_focal_curves(out: Path, gammas: Sequence[float] = FIGURE1_GAMMAS) -> Path:
    """Draw Figure 1 (loss against the probability of the ground-truth class) to ``out``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    p_t, curves = focal_curves(gammas)
    fig = Figure(figsize=(6.0, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for gamma, loss in curves.items():
        ax.plot(p_t, loss, label=f"γ = {gamma:g}", linewidth=2)
    ax.axvspan(0.6, 1.0, color="0.92", zorder=0)
    ax.text(0.8, 1.3, "well-classified\nexamples", ha="center", fontsize=9)
    ax.text(0.3, 3.0, r"$CE(p_t) = -\log(p_t)$" "\n" r"$FL(p_t) = -(1-p_t)^\gamma \log(p_t)$",
            fontsize=10)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 5.0)
    ax.set_xlabel("probability of ground truth class (p_t)")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    ax.set_title("Focal loss vs. cross entropy (paper Figure 1)", fontsize=10)
    fig.tight_layout()
    return save_figure_atomic(fig, out)



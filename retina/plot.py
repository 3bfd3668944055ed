"""``retina-plot``: the focal loss paper's Figure 1 and Figure 4.

``retina-plot focal-curves [out=PATH] [gammas=0,0.5,1,2,5]``
    Figure 1: FL(p_t) = -(1 - p_t)^γ log(p_t) against p_t, computed with
    :func:`retina.ops.sigmoid_focal_loss` (no α weighting, as in the figure).

``retina-plot loss-cdf checkpoint=PATH [data=GROUP] [data.KEY=VALUE ...] [images=N] [out=PATH]``
    Figure 4: cumulative distribution of the normalised loss over positive and over negative
    anchors of a trained model, for γ ∈ {0, 0.5, 1, 2}; see :mod:`retina.plot_cdf`.

Arguments are ``key=value`` words (like the other entry points' overrides); figures are
drawn with matplotlib's Agg canvas so no display is needed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "FIGURE1_GAMMAS",
    "focal_curves",
    "main",
    "parse_args",
    "plot_focal_curves",
]

FIGURE1_GAMMAS: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 5.0)
"""The γ values of the paper's Figure 1."""

_USAGE = (
    "usage: retina-plot focal-curves [out=PATH] [gammas=0,0.5,1,2,5]\n"
    "       retina-plot loss-cdf checkpoint=PATH [data=GROUP] [data.KEY=VALUE ...] "
    "[images=N] [gammas=0,0.5,1,2] [device=cpu] [out=PATH]"
)


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
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


def _floats(name: str, text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.strip("[]()").split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{name}= expects comma-separated numbers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise ValueError(f"{name}= expects one or more numbers >= 0, got {text!r}")
    return values


def parse_args(argv: Sequence[str], allowed: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Split ``key=value`` words into known keys and ``data.*`` overrides.

    Raises:
        ValueError: a word without ``=``, a key not in ``allowed``, or a repeated key.
    """
    args: dict[str, str] = {}
    data_overrides: list[str] = []
    for word in argv:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise ValueError(f"argument {word!r} is not key=value")
        if key.startswith("data.") and "data" in allowed:
            data_overrides.append(word)
            continue
        if key not in allowed:
            raise ValueError(f"unknown argument {key!r} (expected {', '.join(allowed)})")
        if key in args:
            raise ValueError(f"argument {key!r} given twice")
        args[key] = value
    return args, data_overrides


def _focal_curves_main(argv: Sequence[str]) -> Path:
    args, _ = parse_args(argv, ("out", "gammas"))
    gammas = _floats("gammas", args["gammas"]) if "gammas" in args else FIGURE1_GAMMAS
    return plot_focal_curves(Path(args.get("out", "focal_curves.png")), gammas)


def _loss_cdf_main(argv: Sequence[str]) -> Path:
    from retina.plot_cdf import FIGURE4_GAMMAS, loss_cdf_from_checkpoint

    args, data_overrides = parse_args(
        argv, ("checkpoint", "data", "images", "gammas", "device", "out")
    )
    if "checkpoint" not in args:
        raise ValueError("loss-cdf needs checkpoint=PATH (a checkpoint of retina-train)")
    try:
        images = int(args.get("images", "50"))
    except ValueError:
        raise ValueError(f"images= expects an integer, got {args['images']!r}") from None
    if images < 1:
        raise ValueError(f"images= must be >= 1, got {images}")
    gammas = _floats("gammas", args["gammas"]) if "gammas" in args else FIGURE4_GAMMAS
    return loss_cdf_from_checkpoint(
        Path(args["checkpoint"]),
        out=Path(args.get("out", "loss_cdf.png")),
        data=args.get("data"),
        data_overrides=data_overrides,
        max_images=images,
        gammas=gammas,
        device=args.get("device", "cpu"),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: ``retina-plot {focal-curves,loss-cdf} [key=value ...]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {"focal-curves": _focal_curves_main, "loss-cdf": _loss_cdf_main}
    if not args or args[0] in ("-h", "--help"):
        print(_USAGE, file=sys.stderr)
        return 0 if args else 2
    if args[0] not in commands:
        print(f"retina-plot: unknown figure {args[0]!r} (expected focal-curves or loss-cdf)",
              file=sys.stderr)
        return 2
    try:
        out = commands[args[0]](args[1:])
    except (ValueError, FileNotFoundError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"retina-plot {args[0]}: {message}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

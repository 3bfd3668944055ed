"""``retina-plot``: the focal loss paper's Figure 1 and Figure 4.

``retina-plot focal-curves [out=PATH] [gammas=0,0.5,1,2,5]``
    Figure 1: FL(p_t) = -(1 - p_t)^γ log(p_t) against p_t, computed with
    :func:`retina.ops.sigmoid_focal_loss` (no α weighting, as in the figure).

``retina-plot loss-cdf checkpoint=PATH [data=GROUP] [data.KEY=VALUE ...] [images=N] [out=PATH]``
    Figure 4: cumulative distribution of the normalised loss over positive and over negative
    anchors of a trained model, for γ ∈ {0, 0.5, 1, 2}; see :mod:`retina.analysis.loss_cdf`.

Arguments are ``key=value`` words (like the other entry points' overrides); figures are
drawn with matplotlib's Agg canvas so no display is needed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from retina.cli import exit_on_interrupt

with exit_on_interrupt("retina-plot"):  # Ctrl-C while loading: one line
    from retina.analysis.figures import FIGURE1_GAMMAS, plot_focal_curves
    from retina.errors import one_line, user_errors

__all__ = ["ARGUMENTS", "main", "output_path", "parse_args"]

# The keys each figure accepts (``loss-cdf`` also takes ``data.KEY=VALUE`` overrides).
ARGUMENTS: dict[str, tuple[str, ...]] = {
    "focal-curves": ("out", "gammas"),
    "loss-cdf": ("checkpoint", "data", "images", "gammas", "device", "out"),
}

_USAGE = (
    "usage: retina-plot focal-curves [out=PATH] [gammas=0,0.5,1,2,5]\n"
    "       retina-plot loss-cdf checkpoint=PATH [data=GROUP] [data.KEY=VALUE ...] "
    "[images=N] [gammas=0,0.5,1,2] [device=cpu] [out=PATH]"
)


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


def output_path(out: str | None, default: str) -> Path:
    """Where a figure goes: ``out`` itself, or ``out/<default>`` when ``out`` names a folder
    (it exists as one, or ends with ``/``); ``default`` when ``out`` is not given."""
    if out is None or out == "":
        return Path(default)
    if out.endswith("/") or Path(out).is_dir():
        return Path(out) / default
    return Path(out)


def _focal_curves_main(argv: Sequence[str]) -> Path:
    args, _ = parse_args(argv, ARGUMENTS["focal-curves"])
    gammas = _floats("gammas", args["gammas"]) if "gammas" in args else FIGURE1_GAMMAS
    return plot_focal_curves(output_path(args.get("out"), "focal_curves.png"), gammas)


def _loss_cdf_main(argv: Sequence[str]) -> Path:
    from retina.analysis.loss_cdf import FIGURE4_GAMMAS, loss_cdf_from_checkpoint

    args, data_overrides = parse_args(argv, ARGUMENTS["loss-cdf"])
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
        out=output_path(args.get("out"), "loss_cdf.png"),
        data=args.get("data"),
        data_overrides=data_overrides,
        max_images=images,
        gammas=gammas,
        device=args.get("device", "cpu"),
    )


@exit_on_interrupt("retina-plot")
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
    except (*user_errors(), ValueError, FileNotFoundError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else one_line(err)
        print(f"retina-plot {args[0]}: {message}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

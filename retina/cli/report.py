"""``retina-report DIR [--reference ROW]``: the table, CSV and figures of a ``retina-train -m``
sweep (``table.md``, ``table.csv``, ``heatmap.png``, ``curves.png``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from retina.cli import exit_on_interrupt

with exit_on_interrupt("retina-report"):  # Ctrl-C while loading: one line
    from retina.analysis.report import write_report
    from retina.analysis.table_format import format_markdown
    from retina.errors import ResultsError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="retina-report",
        description="Report a `retina-train -m` sweep: DIR/table.md (jobs that differ only in "
                    "train.seed are one row: mean ± std, n, ΔAP to a reference row with a 95 % "
                    "Welch interval), table.csv (one line per job), heatmap.png, curves.png.",
    )
    parser.add_argument("dir", type=Path, help="a `retina-train -m` multirun directory")
    parser.add_argument(
        "--reference", metavar="ROW", default=None,
        help="the row the ΔAP column compares to: its number in table.md, or key=value,... "
             "over its settings (e.g. 'gamma=0,alpha=0.75', 'γ=0,α=0.75' or 'loss=focal'); "
             "default: the focal loss row with the paper's γ = 2, α = .25 when present",
    )
    return parser


@exit_on_interrupt("retina-report")
def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: ``retina-report DIR [--reference ROW]``."""
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        table = write_report(args.dir, reference=args.reference)
    except (FileNotFoundError, NotADirectoryError, ValueError, ResultsError) as err:
        print(f"retina-report: {err}", file=sys.stderr)
        return 1
    print(format_markdown(table), end="")
    figures = "heatmap.png" + (", curves.png" if (args.dir / "curves.png").is_file() else "")
    print(f"wrote {args.dir / 'table.md'}, table.csv, {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``retina-report DIR``: the table, CSV and figures of a ``retina-train -m`` sweep."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from retina.analysis.report import format_markdown, write_report
from retina.errors import ResultsError


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: ``retina-report DIR``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: retina-report DIR   (DIR: a `retina-train -m` multirun directory)",
              file=sys.stderr)
        return 0 if args and args[0] in ("-h", "--help") else 2
    try:
        table = write_report(Path(args[0]))
    except (FileNotFoundError, NotADirectoryError, ValueError, ResultsError) as err:
        print(f"retina-report: {err}", file=sys.stderr)
        return 1
    print(format_markdown(table), end="")
    print(f"wrote {Path(args[0]) / 'table.md'}, table.csv, heatmap.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The one exception the data layer raises for bad input."""

from __future__ import annotations


class DataError(Exception):
    """Bad dataset input (annotation file, image, argument). The message is one line that
    names the file, record or argument at fault, fit to print without a traceback."""

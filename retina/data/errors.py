"""The one exception the data layer raises for bad input."""

from __future__ import annotations

_MARKER = "DataError: "


class DataError(Exception):
    """Bad dataset input (annotation file, image, argument). The message is one line that
    names the file, record or argument at fault, fit to print without a traceback.

    A DataLoader worker's exception is re-raised in the main process with the worker's
    traceback folded into the message; the original one-line message is recovered from it.
    """

    def __init__(self, message: str = "") -> None:
        if message.startswith("Caught DataError") and _MARKER in message:
            message = message.rstrip().rsplit(_MARKER, 1)[1].strip()
        super().__init__(message)

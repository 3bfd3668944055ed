"""Every user-facing error of retina, and the one way to put an exception on one line.

A leaf module: it imports nothing of retina, so every layer (config, data, engine, cli) can
raise these without importing each other. Each message is one line that names the file,
record, key or argument at fault, fit to print without a traceback.
"""

from __future__ import annotations

_DATA_MARKER = "DataError: "

# Hydra's hints ("To append to your config use +x=y", the search path) and OmegaConf's context
# lines ("full_key: ...", "object_type=dict") add nothing once the key is named.
_NOISE = (
    "To append",
    "full_key:",
    "object_type=",
    "reference_type=",
    "Config search path",
    "provider=",
)


class ConfigError(ValueError):
    """A config value or key is invalid; ``str(err)`` is one line naming the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class RunDirError(ConfigError):
    """The run directory belongs to another run (locked by a running process, or holding
    an earlier run's checkpoints): nothing may be written into it."""


class DataError(Exception):
    """Bad dataset input (annotation file, image, argument).

    A DataLoader worker's exception is re-raised in the main process with the worker's
    traceback folded into the message; the original one-line message is recovered from it.
    """

    def __init__(self, message: str = "") -> None:
        if message.startswith("Caught DataError") and _DATA_MARKER in message:
            message = message.rstrip().rsplit(_DATA_MARKER, 1)[1].strip()
        super().__init__(message)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: missing, corrupt, foreign, or not matching the model."""


class ResultsError(RuntimeError):
    """A results file cannot be written (disk full, unwritable folder)."""


class ExportError(RuntimeError):
    """An exported model does not reproduce eager inference (names the output that differs)."""


class NonFiniteLossError(RuntimeError):
    """Too many non-finite losses or gradients in a row; the run stops."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, else its type name."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


def one_line(exc: BaseException) -> str:
    """An exception's message (and its cause's, for Hydra's wrappers) on one line."""
    text = str(exc).strip()
    cause = exc.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text = f"{text}\n{str(cause).strip()}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()] or [type(exc).__name__]
    keep = [ln for ln in lines if not ln.startswith(_NOISE)]
    return " ".join(keep or lines)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input (config, data, checkpoint, output folder), not a
    bug: the entry points print them as one line instead of a traceback."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return (ConfigError, DataError, CheckpointError, ResultsError, NonFiniteLossError,
            ExportError, HydraException, OmegaConfBaseException)  # fmt: skip

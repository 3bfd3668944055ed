"""Atomic file writes: the one way retina writes a result, figure or checkpoint.

Every write goes to a temporary file in the destination's folder, is flushed and fsynced,
then renamed over the destination. A full disk, a kill or Ctrl-C leaves either the old file
or the new one, never a truncated one, and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from retina.errors import ResultsError

TMP_PREFIX = ".tmp_"

# mkstemp creates files readable by the owner only; results get the mode a plain open() gives.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` through ``write(binary_file)`` on a temporary sibling, then rename.

    Raises:
        OSError: from the write or rename; the temporary file is removed first (also on
            ``KeyboardInterrupt`` and ``SystemExit``).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
    finally:
        os.close(fd)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


_KINDS = (
    (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)  # fmt: skip


def non_regular_kind(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it exists but is not a regular file (``"a named pipe (FIFO)"``,
    ``"a folder"`` ...), else None. Opening a FIFO for reading would block forever."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def require_regular_file(path: str | os.PathLike, what: str, error: type[Exception]) -> Path:
    """``path`` as a Path if it is a regular file (symlinks followed).

    Raises:
        error: ``"<path>: no such <what>"`` or ``"<path>: <what> is a named pipe (FIFO),
            not a regular file"``.
    """
    path = Path(path)
    kind = non_regular_kind(path)
    if kind is not None:
        raise error(f"{path}: {what} is {kind}, not a regular file")
    if not path.is_file():
        raise error(f"{path}: no such {what}")
    return path


def _results_error(path: Path, err: OSError) -> ResultsError:
    return ResultsError(f"{path}: cannot write ({err.strerror or err})")


def write_json_atomic(path: str | os.PathLike, payload: Any, indent: int | None = None) -> Path:
    """Write ``payload`` as JSON to ``path`` atomically (parent folders created).

    Raises:
        ResultsError: ``"<path>: cannot write (<reason>)"``; an existing ``path`` keeps its
            old content.
    """
    path = Path(path)
    data = (json.dumps(payload, indent=indent, default=str) + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, lambda f: f.write(data))
    except OSError as err:
        raise _results_error(path, err) from err


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; :class:`ResultsError` on failure."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (parent folders created); :class:`ResultsError`
    on failure."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, lambda f: f.write(data))
    except OSError as err:
        raise _results_error(path, err) from err


def save_figure_atomic(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG atomically; :class:`ResultsError` on failure."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    except OSError as err:
        raise _results_error(path, err) from err


def save_image_atomic(image: Any, path: str | os.PathLike, format: str = "PNG") -> Path:
    """Save a ``PIL.Image`` atomically; :class:`ResultsError` on failure."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, lambda f: image.save(f, format=format))
    except OSError as err:
        raise _results_error(path, err) from err


def remove_stale_temps(directory: str | os.PathLike) -> int:
    """Delete temporary files a killed process left in ``directory``; returns the count."""
    count = 0
    for tmp in Path(directory).glob(f"{TMP_PREFIX}*"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            count += 1
    return count

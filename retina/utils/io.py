"""Atomic file writes: the one way retina writes a result, figure or checkpoint.

Every write goes to a temporary file in the destination's folder, is flushed and fsynced,
then renamed over the destination. A full disk, a kill or Ctrl-C leaves either the old file
or the new one, never a truncated one, and no temporary file behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import numbers
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

    An existing ``path`` that is not a regular file (see :func:`output_kind`) is refused
    before anything is written: renaming over a FIFO, a device or a symbolic link would
    replace it instead of writing to it.

    Raises:
        OSError: from the write or rename, or ``EEXIST`` for a destination that is not a
            regular file; the temporary file is removed first (also on ``KeyboardInterrupt``
            and ``SystemExit``).
    """
    path = Path(path)
    kind = output_kind(path)
    if kind is not None:
        raise OSError(errno.EEXIST, f"it is {kind}, not a regular file", str(path))
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


def output_kind(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it exists but may not be replaced by a result file (a folder, a
    FIFO, a device, a socket, or a symbolic link: renaming over the link would replace the
    link, not write through it), else None (absent or a regular file)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    if stat.S_ISLNK(mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        return f"a symbolic link (to {target})"
    return non_regular_kind(path)


def require_output_file(path: str | os.PathLike, what: str = "output file",
                        error: type[Exception] = ResultsError) -> Path:
    """``path`` as a Path if a result may be written there: it is absent or a regular file.
    Every ``--out`` of the command-line tools goes through this before any work.

    Raises:
        error: ``"<path>: <what> is a named pipe (FIFO), not a regular file; nothing
            written"`` (a folder, device, socket or symbolic link likewise).
    """
    path = Path(path)
    kind = output_kind(path)
    if kind is not None:
        raise error(f"{path}: {what} is {kind}, not a regular file; nothing written")
    return path


def require_output_folder(path: str | os.PathLike, what: str = "output folder",
                          error: type[Exception] = ResultsError) -> Path:
    """``path`` as a Path if it is absent or a folder (symbolic links followed), for the
    ``--out`` of tools that write a folder.

    Raises:
        error: ``"<path>: <what> is a regular file, not a folder; nothing written"``.
    """
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        kind = non_regular_kind(path) or ("a regular file" if path.exists() else
                                          "a broken symbolic link")
        raise error(f"{path}: {what} is {kind}, not a folder; nothing written")
    return path


def _results_error(path: Path, err: OSError) -> ResultsError:
    return ResultsError(f"{path}: cannot write ({err.strerror or err})")


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite number (NaN, ±Infinity) replaced by None: strict JSON
    has no such values, and parsers other than Python's refuse them. Non-integer reals
    (NumPy floats included) become Python floats; tuples become lists."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(item) for item in value]
    return value


def write_json_atomic(path: str | os.PathLike, payload: Any, indent: int | None = None) -> Path:
    """Write ``payload`` as strict JSON to ``path`` atomically (parent folders created):
    non-finite numbers are written as ``null`` (:func:`strict_json`).

    Raises:
        ResultsError: ``"<path>: cannot write (<reason>)"``; an existing ``path`` keeps its
            old content.
    """
    path = Path(path)
    text = json.dumps(strict_json(payload), indent=indent, default=str, allow_nan=False)
    data = (text + "\n").encode("utf-8")
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

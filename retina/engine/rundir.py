"""A run directory belongs to one run: a lock file held by the running process, and a fresh
run refused where another run left checkpoints.

The lock is an ``fcntl.flock`` on ``<run dir>/.retina.lock``, held until the process exits
(the kernel releases it on any death, SIGKILL included, so a stale lock file never blocks).
An explicit resume (``train.resume=true``) of a run that is not running is always allowed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import IO

from retina.errors import ConfigError, RunDirError

LOCK_NAME = ".retina.lock"

_held: dict[Path, IO[str]] = {}


def _try_exclusive(handle: IO[str], tries: int = 5, wait: float = 0.05) -> bool:
    """Take an exclusive ``flock`` on ``handle``; a few short retries, so that the instant
    probe of :func:`lock_holder` (``retina-report`` on a live sweep) never refuses a run."""
    for attempt in range(tries):
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            if attempt + 1 < tries:
                time.sleep(wait)
    return False


def lock_run_dir(run_dir: str | os.PathLike, key: str = "hydra.run.dir") -> Path:
    """Take the run directory's lock for this process (idempotent within one process).

    Raises:
        RunDirError: another process holds the lock (one line with its pid), or the
            directory cannot hold a lock file.
    """
    run_dir = Path(run_dir).resolve()
    if run_dir in _held:
        return run_dir
    path = run_dir / LOCK_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held until exit
    except OSError as err:
        raise ConfigError(key, f"{run_dir}: cannot use as run directory ({err.strerror})") from None
    if not _try_exclusive(handle):
        handle.seek(0)
        owner = handle.read().strip() or "?"
        handle.close()
        raise RunDirError(
            key,
            f"{run_dir} is in use by another retina process (pid {owner}); wait for it to "
            "finish or choose another directory",
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _held[run_dir] = handle
    return run_dir


def lock_holder(run_dir: str | os.PathLike) -> str | None:
    """The pid (as written in the lock file; ``"?"`` if unreadable) of the process that holds
    ``run_dir``'s lock now, or ``None`` when no process does. The probe takes a shared lock
    and drops it at once, so it never keeps a run from starting."""
    try:
        handle = open(Path(run_dir) / LOCK_NAME, encoding="utf-8")  # noqa: SIM115
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return handle.read().strip() or "?"
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return None


def release_run_dir(run_dir: str | os.PathLike) -> None:
    """Release this process's lock on ``run_dir`` (the lock file stays; it is harmless)."""
    handle = _held.pop(Path(run_dir).resolve(), None)
    if handle is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()


def require_fresh_run_dir(run_dir: str | os.PathLike, key: str = "hydra.run.dir") -> None:
    """A run that does not resume must not write into a directory holding checkpoints:
    their rotation would delete the new run's checkpoints and a later resume would continue
    the other run.

    Raises:
        RunDirError: one line naming the directory and both ways out.
    """
    from retina.engine.checkpoint import LAST_NAME, list_checkpoints

    ckpt_dir = Path(run_dir) / "checkpoints"
    if list_checkpoints(ckpt_dir) or (ckpt_dir / LAST_NAME).exists():
        raise RunDirError(
            key,
            f"{run_dir} holds checkpoints of an earlier run; continue it with "
            f"train.resume=true or choose another directory ({key}=...)",
        )


EVAL_MARK = "checkpoint"
"""The key of ``retina-eval``'s ``metrics.json`` (the checkpoint evaluated) that a training
run's ``metrics.json`` lacks."""


def require_eval_dir(run_dir: str | os.PathLike, key: str = "hydra.run.dir") -> None:
    """``retina-eval`` writes ``metrics.json`` and ``coco_results.json`` into its run folder:
    refuse a training run's folder (it holds ``checkpoints/``, ``tensorboard/`` or a
    ``metrics.json`` that ``retina-eval`` did not write), whose results it would replace, and
    a sweep's (``multirun.yaml``).
    An earlier evaluation's folder may be reused.

    Raises:
        RunDirError: one line naming the folder and the way out.
    """
    import json

    run_dir = Path(run_dir)
    names = ("checkpoints", "tensorboard", "multirun.yaml")  # the last: a sweep's folder
    found = [name for name in names if (run_dir / name).exists()]
    metrics = run_dir / "metrics.json"
    if metrics.exists():
        try:
            data = json.loads(metrics.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict) or EVAL_MARK not in data:
            found.append("metrics.json")
    if found:
        raise RunDirError(
            key,
            f"{run_dir} is a training run's or sweep's folder ({', '.join(found)}); "
            f"retina-eval would write its metrics.json there: evaluate into another folder "
            f"({key}=...)",
        )

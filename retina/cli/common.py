"""What every console script shares: one-line errors, exit codes, required values."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig, OmegaConf

from retina.errors import ConfigError, one_line, user_errors

_traceback_requested = os.environ.get("HYDRA_FULL_ERROR") == "1"


@contextmanager
def exit_on_user_error(prog: str) -> Iterator[None]:
    """Turn :func:`retina.errors.user_errors` into one line on stderr and exit status 1 (a
    traceback only when the user set ``HYDRA_FULL_ERROR=1``). Use it inside the
    ``@hydra.main`` function too: Hydra itself would print an extra "Error executing job"
    line first."""
    try:
        yield
    except user_errors() as exc:
        if _traceback_requested:
            raise
        sys.stderr.write(f"{prog}: error: {one_line(exc)}\n")
        sys.stderr.flush()
        sys.exit(1)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that the same cleanup runs (the
    atomic writes delete their temporary files, the run directory's lock is released)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def run_cli(app: Callable[[], Any], prog: str) -> None:
    """Run a ``@hydra.main`` function with one-line errors for bad input.

    The model defaults node is registered first (:mod:`retina.engine.defaults`).
    Hydra prints its own errors (an unknown override key, a missing config group option)
    over several lines unless ``HYDRA_FULL_ERROR`` is set, in which case it re-raises them;
    so it is set here and the error printed as one line by :func:`exit_on_user_error`.
    Ctrl-C exits with status 130 and SIGTERM with 143, each with one line, after the same
    cleanup. An ``OSError`` on a named path that escapes (Hydra creating an unwritable or
    occupied ``hydra.run.dir``) is one line too.
    """
    from retina.engine.defaults import register_defaults

    register_defaults()  # configs/model/*.yaml extend it
    os.environ["HYDRA_FULL_ERROR"] = "1"
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with exit_on_user_error(prog):
            app()
    except Terminated:
        sys.stderr.write(f"{prog}: terminated\n")
        sys.exit(143)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        sys.exit(130)
    except OSError as err:
        if err.filename is None or _traceback_requested:
            raise
        reason = err.strerror or err
        sys.stderr.write(f"{prog}: error: {err.filename}: cannot create or write ({reason})\n")
        sys.exit(1)
    finally:
        signal.signal(signal.SIGTERM, previous)


def required_value(cfg: DictConfig, key: str) -> str:
    """A mandatory string value (``???`` in the config), with a clear error when unset."""
    if OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, ""):
        raise ConfigError(key, f"is required ({key}=...)")
    return str(cfg.get(key))

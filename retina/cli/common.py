"""What every console script shares: one-line errors, exit codes, required values."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from retina.cli import Terminated, exit_on_interrupt
from retina.config import CONFIG_DIR
from retina.errors import ConfigError, one_line, user_errors

__all__ = ["Terminated", "exit_on_user_error", "hydra_main", "required_value", "run_cli"]

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
        message = f"{prog}: error: {one_line(exc)}"
        _to_log_files(message)
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
        sys.exit(1)


def hydra_main(run: Callable[[DictConfig], Any], prog: str, config_name: str
               ) -> Callable[[], None]:
    """The console entry point ``prog``: ``run(cfg)`` as the ``@hydra.main`` function of
    ``configs/<config_name>.yaml``, started by :func:`run_cli`, its user errors one line
    (:func:`exit_on_user_error`).

    The task carries ``run``'s module, from which Hydra names the job (and its log file,
    ``<run dir>/<module>.log``), as if ``@hydra.main`` decorated a function there.
    """

    @functools.wraps(run)
    def task(cfg: DictConfig) -> None:
        with exit_on_user_error(prog):
            run(cfg)

    app = hydra.main(version_base="1.3", config_path=str(CONFIG_DIR),
                     config_name=config_name)(task)

    def main() -> None:
        run_cli(app, prog)

    main.__doc__ = f"Console entry point ``{prog}``."
    return main


def _to_log_files(message: str) -> None:
    """Write ``message`` into the log files Hydra opened (``<run dir>/<prog>.log``), so that
    the folder of a run stopped by bad input says why; the console has it from stderr."""
    root = logging.getLogger()
    record = root.makeRecord(root.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def run_cli(app: Callable[[], Any], prog: str) -> None:
    """Run a ``@hydra.main`` function with one-line errors for bad input.

    The model defaults node is registered first (:mod:`retina.engine.defaults`).
    Hydra prints its own errors (an unknown override key, a missing config group option)
    over several lines unless ``HYDRA_FULL_ERROR`` is set, in which case it re-raises them;
    so it is set here and the error printed as one line by :func:`exit_on_user_error`.
    Ctrl-C exits with status 130 and SIGTERM with 143, each with one line, after the same
    cleanup. An ``OSError`` on a named path that escapes (Hydra creating an unwritable or
    occupied ``hydra.run.dir``, or opening its log file where a folder of that name is) is
    one line too.
    """
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        with exit_on_interrupt(prog), exit_on_user_error(prog):
            from retina.engine.defaults import register_defaults  # imports torch: seconds

            register_defaults()  # configs/model/*.yaml extend it
            app()
    except (OSError, ValueError) as err:
        # Hydra's log file (``<run dir>/<prog>.log``) is opened by logging.config, which
        # wraps the OSError (a folder of that name, no permission) in a ValueError.
        cause = err if isinstance(err, OSError) else err.__cause__
        if not isinstance(cause, OSError) or cause.filename is None or _traceback_requested:
            raise
        reason = cause.strerror or cause
        sys.stderr.write(f"{prog}: error: {cause.filename}: cannot create or write ({reason})\n")
        sys.exit(1)


def required_value(cfg: DictConfig, key: str) -> str:
    """A mandatory string value (``???`` in the config), with a clear error when unset."""
    if OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, ""):
        raise ConfigError(key, f"is required ({key}=...)")
    return str(cfg.get(key))

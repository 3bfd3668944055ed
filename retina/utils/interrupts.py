"""Ctrl-C and SIGTERM as one line and an exit status, for the console scripts.

Only the standard library is imported here: the scripts enter :func:`exit_on_interrupt`
before they import their heavy dependencies (torch, Hydra).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that the same cleanup runs (the
    atomic writes delete their temporary files, the run directory's lock is released)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextmanager
def exit_on_interrupt(prog: str) -> Iterator[None]:
    """Ctrl-C inside the block exits with ``<prog>: interrupted`` and status 130, SIGTERM
    with ``<prog>: terminated`` and 143, after ``finally`` blocks and atomic writes have
    cleaned up (SIGTERM is raised as :class:`Terminated` while the block runs)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main else None
    try:
        yield
    except Terminated:
        sys.stderr.write(f"{prog}: terminated\n")
        sys.stderr.flush()
        raise SystemExit(143) from None
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        sys.stderr.flush()
        raise SystemExit(130) from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)

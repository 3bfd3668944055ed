"""The console scripts, one thin module each; :mod:`retina.cli.common` runs them.

This package imports only the standard library: each script's module imports its heavy
dependencies (torch, Hydra) inside ``with exit_on_interrupt(PROG):``, so that Ctrl-C while
they load, seconds on a busy machine, is one line too.
"""

from retina.utils.interrupts import Terminated, exit_on_interrupt

__all__ = ["Terminated", "exit_on_interrupt"]

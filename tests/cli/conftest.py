"""``run_main``: a console script's ``main()`` run in this process as the shell would run it
(its argv, exit status, stdout and stderr), without paying a fresh Python and torch import per
run. Hydra's global state, the root logger's handlers, ``HYDRA_FULL_ERROR`` (which
:func:`retina.cli.common.run_cli` sets) and torch's determinism switches (which
``train.deterministic`` sets) are put back afterwards."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch


@dataclass
class CliResult:
    """What a console script returned: exit status, stdout, stderr."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_main(monkeypatch, capsys) -> Callable[..., CliResult]:
    def run(main: Callable[[], object], prog: str, *args: str) -> CliResult:
        from hydra.core.global_hydra import GlobalHydra

        monkeypatch.setattr(sys, "argv", [prog, *args])
        monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        deterministic = (torch.are_deterministic_algorithms_enabled(),
                         torch.is_deterministic_algorithms_warn_only_enabled())
        benchmark = torch.backends.cudnn.benchmark
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:
            for handler in root.handlers:
                if handler not in handlers:
                    handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)
            GlobalHydra.instance().clear()
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
            torch.backends.cudnn.benchmark = benchmark
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run

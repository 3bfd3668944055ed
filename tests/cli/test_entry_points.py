"""Every console script in pyproject.toml's ``[project.scripts]`` points at a module under
``retina/cli/`` that also runs as ``python -m retina.cli.NAME`` (its ``__main__`` guard
calls the same ``main``)."""

from __future__ import annotations

import runpy
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_console_script_lives_in_retina_cli() -> None:
    for name, target in SCRIPTS.items():
        module, _, func = target.partition(":")
        assert module.startswith("retina.cli.") and func == "main", (name, target)


# runpy warns when the module is already imported, as other tests of this process have done;
# a real `python -m` starts with nothing imported.
@pytest.mark.filterwarnings("ignore:.*found in sys.modules after import:RuntimeWarning")
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_python_dash_m_runs_main(name: str, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m MODULE --help`` prints the usage and exits 0 (argparse and Hydra alike)."""
    module = SCRIPTS[name].partition(":")[0]
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module(module, run_name="__main__", alter_sys=False)
    assert info.value.code in (0, None)
    captured = capsys.readouterr()
    text = (captured.out + captured.err).lower()
    assert "usage" in text or "powered by hydra" in text, f"python -m {module} --help"

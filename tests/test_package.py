"""The package imports without side effects."""

import importlib
import sys


def test_import_has_no_side_effects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sys.modules.pop("retina", None)
    module = importlib.import_module("retina")
    assert module.__version__
    assert list(tmp_path.iterdir()) == []

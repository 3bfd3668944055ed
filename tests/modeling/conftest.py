"""The models here are tiny: one intra-op thread is faster than two, and far faster when
the CPU is shared with other processes (thread hand-offs then dominate). ``torch_home``:
a temporary torch hub cache behind a refused network, for pretrained-weights tests."""

import urllib.error
from pathlib import Path

import pytest
import torch
import torch.hub


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """A fresh ``TORCH_HOME`` and a network that refuses every connection."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(torch.hub, "urlopen", refuse)
    monkeypatch.setattr("urllib.request.urlopen", refuse)
    return tmp_path / "torch"

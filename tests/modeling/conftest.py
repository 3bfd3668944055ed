"""The models here are tiny: one intra-op thread is faster than two, and far faster when
the CPU is shared with other processes (thread hand-offs then dominate)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""ResumableLoader's worker processes end with the loader, not at some later garbage
collection (the order and its resumption: tests/engine/test_trainer.py and
tests/data/test_coco.py)."""

from __future__ import annotations

import gc
import multiprocessing

import torch

from retina.engine.loader import ResumableLoader


def test_dropping_the_loader_stops_its_workers_at_once():
    data = [torch.full((2,), float(i)) for i in range(6)]
    before = set(multiprocessing.active_children())
    loader = ResumableLoader(data, batch_size=2, seed=0, num_workers=1,
                             collate_fn=torch.stack)  # fmt: skip
    assert next(loader).shape == (2, 2)
    assert set(multiprocessing.active_children()) - before  # the worker runs
    enabled = gc.isenabled()
    gc.disable()  # only reference counting may end it
    try:
        del loader
        assert set(multiprocessing.active_children()) <= before
    finally:
        if enabled:
            gc.enable()

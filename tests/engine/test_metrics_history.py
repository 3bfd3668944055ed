"""EvalHook's metrics_history.json: one entry per evaluation, trimmed on resume."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from retina.engine.hooks import EvalHook


class _Logger:
    enabled = False

    def write(self, *_):
        pass


def _hook(run_dir: Path, is_main: bool = True) -> EvalHook:
    return EvalHook(period=2, val_loader=None, val_set=None, logger=_Logger(), run_dir=run_dir,
                    is_main=is_main)


def test_history_is_written_and_trimmed_to_the_resume_iteration(tmp_path: Path):
    hook = _hook(tmp_path)
    hook.before_train(SimpleNamespace(iteration=0))
    for it, ap in ((2, 10.0), (4, 20.0), (6, 30.0)):
        hook.metrics = {"AP": ap, "AP50": ap + 1, "AP75": float("nan"), "APs": 1.0}
        hook._record(it)
    path = tmp_path / "metrics_history.json"
    assert json.loads(path.read_text()) == [
        {"iteration": 2, "AP": 10.0, "AP50": 11.0}, {"iteration": 4, "AP": 20.0, "AP50": 21.0},
        {"iteration": 6, "AP": 30.0, "AP50": 31.0}]
    resumed = _hook(tmp_path)
    resumed.before_train(SimpleNamespace(iteration=4))  # resumed from the iteration-4 checkpoint
    assert [e["iteration"] for e in resumed.history] == [2, 4]
    resumed.metrics = {"AP": 33.0}
    resumed._record(6)
    assert [e["AP"] for e in json.loads(path.read_text())] == [10.0, 20.0, 33.0]
    fresh = _hook(tmp_path)
    fresh.before_train(SimpleNamespace(iteration=0))
    assert fresh.history == []


def test_only_rank_zero_writes(tmp_path: Path):
    hook = _hook(tmp_path, is_main=False)
    hook.before_train(SimpleNamespace(iteration=0))
    hook.metrics = {"AP": 1.0}
    hook._record(2)
    assert not (tmp_path / "metrics_history.json").exists() and len(hook.history) == 1


def test_inference_time_per_image_at_batch_one(monkeypatch):
    import math

    import torch
    from trainer_helpers import ToyBoxes, tiny_model

    from retina.engine import evaluation

    calls = []
    model = tiny_model().train()
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda images: calls.append(len(images))
                        or forward(images))
    ms = evaluation.measure_inference_ms(model, ToyBoxes(n=5), torch.device("cpu"), images=3)
    assert ms > 0 and calls == [1] * 5  # 2 warm-up calls, 3 timed, one image each
    assert model.training  # the mode is restored
    assert math.isnan(evaluation.measure_inference_ms(model, ToyBoxes(n=0), "cpu", images=3))

"""The training loop's parts: LR schedule, parameter groups, data order, non-finite losses,
and an in-process resume that is bit-exact."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from torch import nn
from trainer_helpers import ToyBoxes, make_trainer, tiny_model

from retina.data import collate_detection
from retina.engine.loader import ResumableLoader, epoch_batches
from retina.engine.optim import WarmupLRSchedule, lr_factor, param_groups, scaled_lr
from retina.engine.trainer import Hook, NonFiniteLossError, Trainer, rng_state, set_rng_state


def test_paper_schedule_factors():
    kw = {"max_iter": 90000, "steps": (60000, 80000), "warmup_iters": 1000,
          "warmup_factor": 0.001}  # fmt: skip
    assert lr_factor(0, **kw) == pytest.approx(0.001)
    assert lr_factor(500, **kw) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(1000, **kw) == 1.0
    assert lr_factor(59999, **kw) == 1.0
    assert lr_factor(60000, **kw) == pytest.approx(0.1)
    assert lr_factor(80000, **kw) == pytest.approx(0.01)
    assert scaled_lr(0.01, 16) == 0.01 and scaled_lr(0.01, 8) == 0.005


def test_cosine_schedule_and_scheduler_state():
    assert lr_factor(0, max_iter=100, name="cosine") == 1.0
    assert lr_factor(50, max_iter=100, name="cosine") == pytest.approx(0.5)
    assert lr_factor(100, max_iter=100, name="cosine", min_factor=0.1) == pytest.approx(0.1)
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.02)
    sched = WarmupLRSchedule(opt, max_iter=10, name="cosine", warmup_iters=2, warmup_factor=0.5)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(10):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.01) and lrs[-1] == pytest.approx(0.0, abs=1e-12)
    buffer = io.BytesIO()
    torch.save(sched.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    longer = WarmupLRSchedule(torch.optim.SGD([param], lr=0.02), max_iter=20, name="cosine")
    longer.load_state_dict(state)  # progress from the checkpoint, shape from the config
    assert longer.last_epoch == 10 and longer.max_iter == 20 and longer.warmup_iters == 0


def test_no_decay_on_norms_and_biases():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.GroupNorm(2, 4),
                          nn.Conv2d(4, 4, 1, bias=False))  # fmt: skip
    model[0].weight.requires_grad_(False)
    plain = param_groups(model, weight_decay=1e-4)
    assert len(plain) == 1 and len(plain[0]["params"]) == 6  # frozen weight left out
    split = param_groups(model, weight_decay=1e-4, no_decay_norm_bias=True)
    decay, no_decay = split
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [model[3].weight.shape]
    assert len(no_decay["params"]) == 5  # conv bias + 2 x (norm weight, bias)


def test_epoch_order_is_seeded_and_grouped():
    a = epoch_batches(10, 3, seed=1, epoch=0)
    assert a == epoch_batches(10, 3, seed=1, epoch=0)
    assert a != epoch_batches(10, 3, seed=1, epoch=1)
    assert len(a) == 3 and len({i for b in a for i in b}) == 9
    groups = [0, 1] * 5
    for batch in epoch_batches(10, 2, seed=1, epoch=0, group_ids=groups):
        assert len({groups[i] for i in batch}) == 1


def _ids(batch) -> list[int]:
    return [t["image_id"] for t in batch[1]]


def test_loader_resumes_mid_epoch_with_same_augmentations():
    def loader(rank=0, world=1, batch_size=4):
        return ResumableLoader(ToyBoxes(), batch_size=batch_size, seed=5, rank=rank,
                               world_size=world, collate_fn=collate_detection)  # fmt: skip

    straight = loader()
    batches = [next(straight) for _ in range(7)]  # 3 batches per epoch: crosses 2 epochs
    assert straight.state_dict()["epoch"] == 2 and straight.state_dict()["batch"] == 1

    first = loader()
    for _ in range(4):
        next(first)
    resumed = loader()
    resumed.load_state_dict(first.state_dict())
    for expected in batches[4:]:
        got = next(resumed)
        assert _ids(got) == _ids(expected)
        for x, y in zip(got[0], expected[0], strict=True):
            assert torch.equal(x, y)  # same (randomly flipped) pixels

    # two ranks split each global batch: together they see one process's batch
    r0, r1 = loader(0, 2), loader(1, 2)
    for expected in batches[:3]:
        assert sorted(_ids(next(r0)) + _ids(next(r1))) == sorted(_ids(expected))


class _Scripted(nn.Module):
    """Returns the losses it is told to (NaN where scripted), with a real gradient."""

    def __init__(self, script: list[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.script = script
        self.calls = 0

    def forward(self, images, targets):
        value = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        return {"loss_cls": self.w.sum() * value, "loss_box_reg": self.w.sum() * 0.0}, {}


class _Weights(Hook):
    def __init__(self) -> None:
        self.values: list[float] = []

    def after_step(self, trainer: Trainer) -> None:
        self.values.append(trainer.model.w.item())


def _scripted_trainer(script: list[float], max_nonfinite: int) -> Trainer:
    model = _Scripted(script)
    return make_trainer(model, max_nonfinite=max_nonfinite, max_iter=len(script))


def test_nonfinite_loss_skips_the_step():
    trainer = _scripted_trainer([1.0, float("nan"), float("inf"), 1.0], max_nonfinite=3)
    recorder = _Weights()
    trainer.hooks.append(recorder)
    trainer.train(0, 4)
    weights = recorder.values
    assert weights[1] == weights[0] and weights[2] == weights[0]  # skipped updates
    assert weights[3] != weights[2]
    assert trainer.num_skipped == 2 and trainer.nonfinite_in_a_row == 0
    assert trainer.scheduler.last_epoch == 4  # the schedule follows the iteration count


class _ScriptedBN(_Scripted):
    """A scripted loss after a BatchNorm that sees the (NaN where scripted) input."""

    def __init__(self, script: list[float]) -> None:
        super().__init__(script)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, images, targets):
        value = self.script[min(self.calls, len(self.script) - 1)]
        self.bn(torch.full((4, 2), value) + torch.arange(4.0)[:, None])
        return super().forward(images, targets)


def test_a_skipped_step_leaves_the_bn_statistics_alone():
    """The forward of a skipped step has written NaN into the running statistics; the
    trainer must put them back, or the next checkpoint (and every later step) carries NaN."""
    model = _ScriptedBN([1.0, float("nan"), float("inf"), 1.0])
    trainer = make_trainer(model, max_nonfinite=3, max_iter=4)
    trainer.train(0, 1)
    after_good = {k: v.clone() for k, v in model.bn.state_dict().items()}
    trainer.train(1, 3)
    for key, value in model.bn.state_dict().items():
        assert torch.equal(value, after_good[key]), key  # NaN/inf steps left no trace
    trainer.train(3, 4)
    assert model.bn.num_batches_tracked.item() == 2
    assert torch.isfinite(model.bn.running_mean).all()


def test_too_many_nonfinite_losses_stop_the_run():
    trainer = _scripted_trainer([1.0] + [float("nan")] * 5, max_nonfinite=3)
    with pytest.raises(NonFiniteLossError, match=r"train.max_nonfinite=3") as err:
        trainer.train(0, 6)
    assert "iteration 4" in str(err.value) and "\n" not in str(err.value)


def test_gradient_clipping_bounds_the_update():
    trainer = _scripted_trainer([1000.0] * 2, max_nonfinite=1)
    trainer.clip_grad_norm = 1.0
    trainer.train(0, 1)
    # lr at iteration 0 = 0.01 * warmup 0.001; clipped gradient norm 1 (plus tiny decay)
    assert abs(trainer.model.w.item() - 1.0) < 0.01 * 0.001 * 1.01
    assert trainer.last["grad_norm"] == pytest.approx(1000.0)


def test_the_loss_statistics_are_logged_from_what_the_loss_returns():
    model = tiny_model()
    trainer = make_trainer(model, max_iter=1)
    trainer.train(0, 1)
    last = trainer.last
    levels = [last[f"num_pos_p{i}"] for i in range(3, 8)]
    assert last["num_pos"] > 0 and sum(levels) == last["num_pos"]
    assert last["normalizer"] == last["num_pos"]  # the batch normaliser (no EMA, one process)
    assert not hasattr(model, "stats") and not hasattr(model, "last_num_pos")


def test_rng_state_round_trips_through_weights_only_load():
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(), random.random())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    set_rng_state(torch.load(buffer, weights_only=True))
    again = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


def test_in_process_resume_is_bit_exact():
    """1 step, save, 2 more in a fresh trainer == 3 straight. The fewest steps that notice a
    lost optimizer state (momentum), data position (mid-epoch: 3 batches per epoch) or LR
    schedule (it sets the LR of the step after the first resumed one, so 2+1 would not)."""
    straight = make_trainer(tiny_model(norm="bn"), max_iter=3)
    straight.train(0, 3)

    first = make_trainer(tiny_model(norm="bn"), max_iter=3)
    first.train(0, 1)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    torch.manual_seed(1234)  # whatever the RNG did in between must not matter
    model = tiny_model(seed=99, norm="bn")
    model.load_state_dict(state["model"])
    resumed = make_trainer(model, max_iter=3)
    resumed.load_state_dict(state)
    assert resumed.iteration == 1
    resumed.train(resumed.iteration, 3)
    for (name, a), b in zip(straight.model.state_dict().items(),
                            resumed.model.state_dict().values(), strict=True):  # fmt: skip
        assert torch.equal(a, b), name

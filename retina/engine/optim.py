"""Optimizer and learning-rate schedule for iteration-based detector training.

The paper's recipe (Lin et al. 2017, Sec. 4.1): SGD with momentum 0.9 and weight decay 1e-4,
learning rate 0.01 for a minibatch of 16 images, divided by 10 at 60k and 80k of 90k
iterations. The learning rate scales linearly with the batch size (Goyal et al. 2017) and
starts with a linear warmup, as detectron2 and torchvision's reference scripts do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

_NORM_TYPES = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def scaled_lr(base_lr: float, batch_size: int, reference_batch_size: int = 16) -> float:
    """Linear scaling rule: ``base_lr`` is the LR at ``reference_batch_size`` images."""
    return base_lr * batch_size / reference_batch_size


def _is_norm(module: nn.Module) -> bool:
    # torchvision's FrozenBatchNorm2d has no trainable parameters, so it never matters here.
    return isinstance(module, _NORM_TYPES) or type(module).__name__.endswith("Norm2d")


def param_groups(
    model: nn.Module, *, weight_decay: float, no_decay_norm_bias: bool = False
) -> list[dict]:
    """Split trainable parameters into groups for the optimizer.

    Args:
        model: the model; frozen parameters (``requires_grad=False``) are left out.
        weight_decay: decay for the ordinary weights.
        no_decay_norm_bias: when true, normalisation-layer parameters and all biases get
            weight decay 0 (as in Goyal et al. 2017 / timm); the paper decays everything.

    Returns:
        one group ``{"params", "weight_decay"}`` per decay value (empty groups dropped).
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            skip = no_decay_norm_bias and (_is_norm(module) or name == "bias")
            (no_decay if skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    optimizer: Callable[..., torch.optim.Optimizer],
    *,
    lr: float,
    weight_decay: float,
    no_decay_norm_bias: bool = False,
) -> torch.optim.Optimizer:
    """Build the optimizer from a partial constructor (Hydra ``_partial_: true``).

    Args:
        model: the model whose trainable parameters are optimised.
        optimizer: e.g. ``functools.partial(torch.optim.SGD, momentum=0.9)``; it receives
            the parameter groups and ``lr``.
        lr: the (already batch-scaled) learning rate.
        weight_decay: weight decay for ordinary weights.
        no_decay_norm_bias: no weight decay on norm parameters and biases.
    """
    groups = param_groups(model, weight_decay=weight_decay, no_decay_norm_bias=no_decay_norm_bias)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return optimizer(groups, lr=lr)


def lr_factor(
    iteration: int,
    *,
    max_iter: int,
    name: str = "step",
    steps: Sequence[int] = (),
    gamma: float = 0.1,
    warmup_iters: int = 0,
    warmup_factor: float = 0.001,
    min_factor: float = 0.0,
) -> float:
    """Multiplier of the base LR at ``iteration`` (0-based: the update about to be made).

    Args:
        iteration: number of optimizer steps taken so far.
        max_iter: total number of iterations (the cosine's period).
        name: ``"step"`` (multiply by ``gamma`` at each of ``steps``) or ``"cosine"``
            (half cosine from 1 down to ``min_factor`` at ``max_iter``).
        steps: iterations at which the step schedule decays; values >= max_iter never fire.
        gamma: decay factor per step.
        warmup_iters: linear warmup length; the factor ramps from ``warmup_factor`` to 1.
        warmup_factor: factor at iteration 0.
        min_factor: the cosine schedule's final factor.
    """
    if name == "step":
        factor = gamma ** sum(1 for s in steps if iteration >= s)
    elif name == "cosine":
        progress = min(iteration, max_iter) / max_iter
        factor = min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"schedule.name: unknown schedule {name!r} (expected 'step' or 'cosine')")
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        factor *= warmup_factor * (1.0 - alpha) + alpha
    return factor


class WarmupLRSchedule(LRScheduler):
    """Warmup followed by a step or cosine decay, evaluated in closed form per iteration.

    Call ``step()`` once after every optimizer step; ``last_epoch`` counts iterations. The
    state dict holds only plain numbers and lists, so it loads with ``weights_only=True``.
    ``LambdaLR`` would do the same but cannot save its function.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        max_iter: int,
        name: str = "step",
        steps: Iterable[int] = (),
        gamma: float = 0.1,
        warmup_iters: int = 0,
        warmup_factor: float = 0.001,
        min_factor: float = 0.0,
    ) -> None:
        self.max_iter = int(max_iter)
        self.name = str(name)
        self.steps = [int(s) for s in steps]
        self.gamma = float(gamma)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        self.min_factor = float(min_factor)
        lr_factor(0, **self._kwargs())  # fail early on a bad name
        super().__init__(optimizer)

    def _kwargs(self) -> dict:
        return {
            "max_iter": self.max_iter,
            "name": self.name,
            "steps": self.steps,
            "gamma": self.gamma,
            "warmup_iters": self.warmup_iters,
            "warmup_factor": self.warmup_factor,
            "min_factor": self.min_factor,
        }

    def state_dict(self) -> dict:
        """Progress only (iteration, base LRs): the schedule's shape comes from the config,
        so a resumed run with a longer ``max_iter`` or other steps follows the new one."""
        return {k: v for k, v in super().state_dict().items() if k not in self._kwargs()}

    def get_lr(self) -> list[float]:
        factor = lr_factor(self.last_epoch, **self._kwargs())
        return [base_lr * factor for base_lr in self.base_lrs]

"""The iteration-based training loop.

One step reads top to bottom: next batch -> forward (autocast on CUDA when AMP is on) ->
finite-loss check -> backward -> gradient norm (clipping optional; a non-finite norm skips
the update) -> optimizer -> LR schedule. Checkpointing, evaluation and logging are hooks
(``before_train``/``after_step``/``after_train``) passed in from outside, so the loop carries
no flags for them.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from retina.engine.distributed import all_reduce_sum, current
from retina.errors import NonFiniteLossError

log = logging.getLogger("retina.train")

Batch = tuple[list[torch.Tensor], list[dict[str, Any]]]


class Hook:
    """Hook points of :class:`Trainer`; subclasses override the ones they need."""

    def before_train(self, trainer: Trainer) -> None: ...

    def after_step(self, trainer: Trainer) -> None: ...

    def after_train(self, trainer: Trainer) -> None: ...


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel and/or ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain containers (``weights_only``-loadable)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state(
        ("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
         npst["cached_gaussian"])
    )  # fmt: skip
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class Trainer:
    """Runs ``model`` from ``start_iter`` to ``max_iter`` optimizer steps.

    Args:
        model: in train mode returns a pair ``(losses, stats)`` (e.g.
            :class:`~retina.modeling.retinanet.LossOutput`; possibly wrapped in
            DistributedDataParallel / ``torch.compile``): ``losses`` ``{"loss_cls",
            "loss_box_reg"}`` already normalised so that DDP's gradient average is right
            (the model's job; the trainer only sums them), and ``stats``, 0-dim tensors the
            loss measured, already global over processes (e.g. the foreground count),
            logged with each step as they are.
        optimizer: the optimizer over the model's parameters.
        scheduler: stepped once per iteration (also for skipped ones, so the LR follows the
            iteration count).
        data: iterator of batches ``(list[(3,H,W) uint8], list[target dict])``; it may
            expose ``state_dict()``/``load_state_dict()`` for its position.
        device: where the model lives.
        amp_dtype: ``torch.bfloat16``/``torch.float16`` autocast on CUDA; None = fp32.
        clip_grad_norm: clip the global gradient norm to this value; None = no clipping.
        max_nonfinite: stop after this many non-finite losses/gradients in a row.
        hooks: checkpoint / evaluation / logging hooks, called in order.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        data: Iterator[Batch],
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
        clip_grad_norm: float | None = None,
        max_nonfinite: int = 5,
        hooks: Sequence[Hook] = (),
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.data = data
        self.device = device
        self.amp_dtype = amp_dtype if device.type == "cuda" else None
        self.scaler = torch.amp.GradScaler(
            device.type, enabled=self.amp_dtype == torch.float16 and device.type == "cuda"
        )
        self.clip_grad_norm = clip_grad_norm
        self.max_nonfinite = max_nonfinite
        self.hooks = list(hooks)
        self.dist = current()
        self.iteration = 0  # optimizer steps done (including skipped ones)
        self.max_iter = 0
        self.nonfinite_in_a_row = 0
        self.num_skipped = 0
        # Filled by run_step for the hooks: python floats, global over ranks.
        self.last: dict[str, float] = {}
        self.images_seen = 0
        # The model's buffers and their copies from before this step's forward (see
        # _snapshot_buffers), allocated at the first step.
        self._buffers: list[torch.Tensor] = []
        self._buffer_copies: list[torch.Tensor] | None = None

    # ------------------------------------------------------------------ the loop
    def train(self, start_iter: int, max_iter: int) -> None:
        """Run iterations ``start_iter .. max_iter - 1``, then the ``after_train`` hooks."""
        self.iteration, self.max_iter = start_iter, max_iter
        self.model.train()
        for hook in self.hooks:
            hook.before_train(self)
        while self.iteration < max_iter:
            self.run_step()
            self.iteration += 1
            for hook in self.hooks:
                hook.after_step(self)
        for hook in self.hooks:
            hook.after_train(self)

    def run_step(self) -> None:
        """One iteration: data, forward, checks, backward, clip, optimizer, schedule."""
        start = time.perf_counter()
        images, targets = next(self.data)
        images, targets = self._to_device(images, targets)
        self._snapshot_buffers()
        with self._autocast():
            loss_dict, stats = self.model(images, targets)
        loss_dict = {k: v.float() for k, v in loss_dict.items()}
        loss = sum(loss_dict.values())

        # All ranks must agree on skipping, or DDP's backward would hang.
        loss_ok = bool(
            all_reduce_sum(torch.isfinite(loss).float().reshape(1))[0] == self.dist.world_size
        )
        grad_norm = float("nan")
        stepped = False
        self.optimizer.zero_grad(set_to_none=True)
        if loss_ok:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            grad_norm = self._grad_norm()
            if math.isfinite(grad_norm) or self.scaler.is_enabled():
                # GradScaler skips the update itself on inf/nan gradients and lowers the scale.
                self.scaler.step(self.optimizer)
                self.scaler.update()
                stepped = math.isfinite(grad_norm)
        lr = float(self.optimizer.param_groups[0]["lr"])  # the LR of this step
        self.scheduler.step()

        values = self._global_losses(loss_dict)
        if stepped or (loss_ok and self.scaler.is_enabled()):
            self.nonfinite_in_a_row = 0
        else:
            # A skipped step changes nothing: its forward already wrote into the BN running
            # statistics (and the loss normaliser's EMA), possibly NaN; put them back.
            self._restore_buffers()
            self._count_nonfinite("loss" if not loss_ok else "gradient norm", values)
        self.images_seen += len(images) * self.dist.world_size
        elapsed = max(time.perf_counter() - start, 1e-9)
        self.last = {
            **values,
            "loss": sum(values.values()),
            "lr": lr,
            **self._stats(stats),
            "grad_norm": grad_norm,
            "img_per_s": len(images) * self.dist.world_size / elapsed,
        }

    # ------------------------------------------------------------------ pieces of a step
    def _to_device(
        self, images: list[torch.Tensor], targets: list[dict[str, Any]]
    ) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
        non_blocking = self.device.type == "cuda"
        images = [img.to(self.device, non_blocking=non_blocking) for img in images]
        targets = [
            {k: v.to(self.device, non_blocking=non_blocking) if torch.is_tensor(v) else v
             for k, v in t.items()}
            for t in targets
        ]  # fmt: skip
        return images, targets

    def _snapshot_buffers(self) -> None:
        """Copy every buffer the forward may update (BN running statistics, the normaliser
        EMA) into copies allocated once: one multi-tensor copy per step, a few floats per
        channel, instead of a fresh clone of each buffer."""
        if self._buffer_copies is None:
            self._buffers = [b for b in self.model.buffers()]
            self._buffer_copies = [b.detach().clone() for b in self._buffers]
        elif self._buffers:
            torch._foreach_copy_(self._buffer_copies, self._buffers)

    def _restore_buffers(self) -> None:
        if self._buffers:
            with torch.no_grad():
                torch._foreach_copy_(self._buffers, self._buffer_copies)

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @staticmethod
    def _stats(stats: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """The 0-dim tensors the loss measured (e.g. RetinaNet's global foreground count)
        as Python floats, read from the device in one transfer."""
        if not stats:
            return {}
        values = torch.stack([v.detach().double().reshape(()) for v in stats.values()])
        return {str(k): float(v) for k, v in zip(stats, values.tolist(), strict=True)}

    def _grad_norm(self) -> float:
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            return 0.0
        if self.clip_grad_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        return float(norm)

    def _global_losses(self, loss_dict: Mapping[str, torch.Tensor]) -> dict[str, float]:
        keys = sorted(loss_dict)
        stacked = torch.stack([loss_dict[k].detach().double().reshape(()) for k in keys])
        mean = all_reduce_sum(stacked) / self.dist.world_size
        return {k: float(v) for k, v in zip(keys, mean.tolist(), strict=True)}

    def _count_nonfinite(self, what: str, values: Mapping[str, float]) -> None:
        self.nonfinite_in_a_row += 1
        self.num_skipped += 1
        shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        log.warning(
            "iteration %d: non-finite %s (%s); update skipped (%d in a row, limit %d)",
            self.iteration + 1, what, shown, self.nonfinite_in_a_row, self.max_nonfinite,
        )  # fmt: skip
        if self.nonfinite_in_a_row >= self.max_nonfinite:
            raise NonFiniteLossError(
                f"stopping at iteration {self.iteration + 1}: {self.nonfinite_in_a_row} "
                f"non-finite losses/gradients in a row (train.max_nonfinite="
                f"{self.max_nonfinite}); the last good checkpoint is kept. Lower the LR "
                f"(optim.base_lr) or set train.clip_grad_norm."
            )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-exactly (the checkpoint's training part)."""
        state: dict[str, Any] = {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "rng": rng_state(),
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
        }
        if hasattr(self.data, "state_dict"):
            state["data_position"] = self.data.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore optimizer, scheduler, scaler, RNG and data position (the model's weights
        are loaded separately, with a clear error when they do not fit). A state without
        ``optimizer``/``scheduler`` leaves them as built."""
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.nonfinite_in_a_row = int(state.get("nonfinite_in_a_row", 0))
        if "rng" in state:
            set_rng_state(state["rng"])
        if "data_position" in state and hasattr(self.data, "load_state_dict"):
            self.data.load_state_dict(state["data_position"])

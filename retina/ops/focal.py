"""The focal loss family (Lin et al., ICCV 2017) as fused autograd Functions.

Each public function validates its arguments, then runs a ``torch.autograd.Function``
whose forward evaluates the loss from logits in one kernel and whose backward recomputes
the analytic gradient from the saved *inputs* only, so no (N, K) intermediate outlives the
forward pass. The sigmoid losses take a ``backend`` (see :mod:`retina.ops.focal_backend`):
on CUDA inputs the one-pass Triton kernels of :mod:`retina.ops.focal_triton` (one pass over
memory each way), everywhere else the ATen kernels of :mod:`retina.ops.focal_kernels` on
bounded row chunks. The autograd Functions keep the backend, so the backward runs the
forward's kernels.
The readable formulas these are tested against live in :mod:`retina.ops.focal_reference`.

Cross-entropy baselines are the same functions: CE is ``gamma=0, alpha=None`` and the
alpha-balanced CE is ``gamma=0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from retina.ops import focal_kernels as fk
from retina.ops.focal_backend import check_backend, chunked, fused_module

_REDUCTIONS = ("none", "mean", "sum")


# --------------------------------------------------------------------------- validation
def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _check_gamma(gamma: float, positive: bool = False) -> float:
    if isinstance(gamma, Tensor):
        gamma = gamma.item()
    gamma = float(gamma)
    if not math.isfinite(gamma) or gamma < 0 or (positive and gamma == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"gamma must be a finite number {bound}, got {gamma}")
    return gamma


def _check_alpha(alpha: float | None) -> float | None:
    """Scalar alpha: None or any negative value disables alpha_t; otherwise it must be in [0, 1]."""
    if alpha is None:
        return None
    if isinstance(alpha, Tensor):
        alpha = alpha.item()
    alpha = float(alpha)
    if math.isnan(alpha) or alpha > 1:
        raise ValueError(f"alpha must be in [0, 1] (or negative / None to disable), got {alpha}")
    return None if alpha < 0 else alpha


def _check_logits(logits: Tensor, ndim: int | None = None) -> None:
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise ValueError(f"logits must be a floating-point tensor, got {_describe(logits)}")
    if ndim is not None and logits.dim() != ndim:
        raise ValueError(f"logits must have shape (N, K), got {tuple(logits.shape)}")


def _check_targets(logits: Tensor, targets: Tensor) -> None:
    if not isinstance(targets, Tensor):
        raise ValueError(f"targets must be a tensor, got {_describe(targets)}")
    if targets.shape != logits.shape:
        raise ValueError(
            f"targets shape {tuple(targets.shape)} does not match logits shape "
            f"{tuple(logits.shape)}"
        )
    if targets.device != logits.device:
        raise ValueError(f"targets are on {targets.device}, logits on {logits.device}")


def _check_labels(logits: Tensor, labels: Tensor, low: int) -> None:
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be an integer tensor, got {_describe(labels)}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"labels must have shape ({logits.shape[0]},) to match logits "
            f"{tuple(logits.shape)}, got {tuple(labels.shape)}"
        )
    if labels.device != logits.device:
        raise ValueError(f"labels are on {labels.device}, logits on {logits.device}")
    if labels.numel():
        lo, hi = torch.aminmax(labels)
        if lo.item() < low or hi.item() >= logits.shape[1]:
            raise ValueError(
                f"labels must lie in [{low}, {logits.shape[1] - 1}], "
                f"got values in [{lo.item()}, {hi.item()}]"
            )


def _describe(obj: object) -> str:
    return f"{obj.dtype} tensor" if isinstance(obj, Tensor) else type(obj).__name__


# --------------------------------------------------------------------------- sigmoid FL
class _SigmoidFocal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, alpha, gamma, reduction, backend):  # type: ignore[override]
        ctx.save_for_backward(logits, targets)
        fused = fused_module(logits, backend)
        if fused is not None:  # one pass; exact for hard and soft targets alike
            ctx.params = (alpha, gamma, reduction, fused)
            loss = fused.dense_forward(logits, targets, alpha, gamma, reduction != "none")
        else:
            hard = _all_zero_or_one(targets)
            ctx.params = (alpha, gamma, reduction, hard)
            fwd = fk.hard_focal_forward if hard else fk.sigmoid_focal_forward
            loss = chunked(fwd, logits, targets, alpha, gamma, reduction != "none")
        loss = _dense_mean(loss, logits, reduction)
        return loss.to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        logits, targets = ctx.saved_tensors
        alpha, gamma, reduction, hard = ctx.params
        grad_out = _dense_mean(grad_out, logits, reduction)
        if not isinstance(hard, bool) and not ctx.needs_input_grad[1]:  # the Triton module
            gx = hard.dense_backward(logits, targets, alpha, gamma, grad_out)
            return gx.to(logits.dtype), None, None, None, None, None
        if hard is True and not ctx.needs_input_grad[1]:
            gx = chunked(fk.hard_focal_backward, logits, targets, alpha, gamma, grad_out)
            return gx.to(logits.dtype), None, None, None, None, None
        grads = _soft_target_grads(ctx, fk.sigmoid_focal_backward, alpha, gamma, grad_out)
        return *grads, None, None, None, None


def _dense_mean(value: Tensor, logits: Tensor, reduction: str) -> Tensor:
    """``value`` (the loss, or the gradient flowing back) / ``logits.numel()`` for "mean"."""
    return value / max(logits.numel(), 1) if reduction == "mean" else value


def _soft_target_grads(ctx: Any, kernel: Callable[..., tuple[Tensor, Tensor | None]],
                       *params: Any) -> tuple[Tensor | None, Tensor | None]:
    """``(d logits, d targets)`` of a backward ``kernel(logits, targets, *params,
    targets_grad)`` on the saved inputs, in their dtypes; None where autograd needs none."""
    logits, targets = ctx.saved_tensors
    gx, gt = chunked(kernel, logits, targets, *params, ctx.needs_input_grad[1])
    gx = gx.to(logits.dtype) if ctx.needs_input_grad[0] else None
    gt = gt.to(targets.dtype) if gt is not None else None
    return gx, gt


def _all_zero_or_one(targets: Tensor) -> bool:
    """Whether every target is exactly 0 or 1 (then the cheaper hard-target kernels apply)."""
    return bool(torch.logical_or(targets == 0, targets == 1).all())


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float | None = 0.25,
                       gamma: float = 2.0, reduction: str = "none", *,
                       backend: str = "auto") -> Tensor:
    """Sigmoid focal loss FL = -alpha_t (1 - p_t)^gamma log(p_t), a drop-in for torchvision's.

    Args:
        logits: (*) float logits; float16/bfloat16 are computed in float32.
        targets: (*) same shape, 0/1 or soft values in [0, 1] (receives a gradient if needed).
        alpha: weight of the positive class in [0, 1]; None or < 0 disables alpha_t.
        gamma: focusing parameter >= 0; 0 gives (alpha-balanced) cross entropy.
        reduction: "none" (shape of logits) | "mean" | "sum" (0-d).
        backend: "auto" | "triton" | "eager" (:mod:`retina.ops.focal_backend`).

    Returns:
        The loss in ``logits.dtype``.
    """
    _check_logits(logits)
    _check_targets(logits, targets)
    alpha = _check_alpha(alpha)
    gamma = _check_gamma(gamma)
    _check_reduction(reduction)
    return _SigmoidFocal.apply(logits, targets, alpha, gamma, reduction, check_backend(backend))


# --------------------------------------------------------------------------- from labels
class _SigmoidFocalFromLabels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, alpha, gamma, reduction, backend):  # type: ignore[override]
        ctx.save_for_backward(logits, labels)
        ctx.params = (alpha, gamma, reduction, backend)
        impl = fused_module(logits, backend)
        if impl is not None:
            loss = impl.labels_forward(logits, labels, alpha, gamma, reduction != "none")
        else:
            loss = chunked(
                fk.from_labels_forward, logits, labels[:, None], alpha, gamma, reduction != "none"
            )
        return (loss * _mean_scale(logits, labels, reduction)).to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        logits, labels = ctx.saved_tensors
        alpha, gamma, reduction, backend = ctx.params
        grad_out = grad_out * _mean_scale(logits, labels, reduction)
        impl = fused_module(logits, backend)
        if impl is not None:
            grad = impl.labels_backward(logits, labels, alpha, gamma, grad_out)
        else:
            grad = chunked(fk.from_labels_backward, logits, labels[:, None], alpha, gamma, grad_out)
        return grad.to(logits.dtype), None, None, None, None, None


def _mean_scale(logits: Tensor, labels: Tensor, reduction: str) -> float:
    """1 / (num_non_ignored_rows * K) for "mean", else 1."""
    if reduction != "mean":
        return 1.0
    return 1.0 / max(int((labels >= -1).sum().item()) * logits.shape[1], 1)


def sigmoid_focal_loss_from_labels(logits: Tensor, labels: Tensor, alpha: float | None = 0.25,
                                   gamma: float = 2.0, reduction: str = "sum", *,
                                   backend: str = "auto") -> Tensor:
    """Sigmoid focal loss against integer labels, without materialising a one-hot target.

    One fused kernel forms the target as the broadcast comparison ``labels[:, None] ==
    arange(K)`` and sums the elementwise loss of every non-ignored entry (no difference of
    large sums, so confident positives cannot cancel a small background loss). In the Triton
    kernels the comparison is fused into the loop and nothing of size (N, K) besides the
    output gradient is materialised; with the eager ATen kernels it exists per row chunk only
    (bounded by ``focal_backend.EAGER_CHUNK_NUMEL``).

    Args:
        logits: (N, K) float logits.
        labels: (N,) int64: class index >= 0 (positive), -1 (background), -2 (ignored).
        alpha, gamma: as in :func:`sigmoid_focal_loss`.
        reduction: "sum" (0-d), "mean" (sum / (num_non_ignored * K)) or "none" ((N, K),
            zero on ignored rows).
        backend: "auto" | "triton" | "eager" (:mod:`retina.ops.focal_backend`).
    """
    _check_logits(logits, ndim=2)
    _check_labels(logits, labels, low=-2)
    alpha = _check_alpha(alpha)
    gamma = _check_gamma(gamma)
    _check_reduction(reduction)
    return _SigmoidFocalFromLabels.apply(
        logits, labels, alpha, gamma, reduction, check_backend(backend)
    )


# --------------------------------------------------------------------------- FL*
class _FocalStar(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, gamma, beta, reduction):  # type: ignore[override]
        ctx.save_for_backward(logits, targets)
        ctx.params = (gamma, beta, reduction)
        loss = chunked(fk.focal_star_forward, logits, targets, gamma, beta, reduction != "none")
        loss = _dense_mean(loss, logits, reduction)
        return loss.to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        logits, targets = ctx.saved_tensors
        gamma, beta, reduction = ctx.params
        grad_out = _dense_mean(grad_out, logits, reduction)
        grads = _soft_target_grads(ctx, fk.focal_star_backward, gamma, beta, grad_out)
        return *grads, None, None, None


def focal_loss_star(logits: Tensor, targets: Tensor, gamma: float = 4.0, beta: float = 0.0,
                    reduction: str = "none") -> Tensor:
    """FL* of the paper's Appendix A: -log(sigmoid(gamma x_t + beta)) / gamma.

    x_t = x for positives (target 1) and -x for negatives (target 0); soft targets t mix
    the two linearly. dFL*/dx = y (p*_t - 1) with y = +-1.

    Args:
        logits: (*) float logits.
        targets: (*) same shape, in [0, 1].
        gamma: > 0. beta: any finite shift.
        reduction: "none" | "mean" | "sum".
    """
    _check_logits(logits)
    _check_targets(logits, targets)
    gamma = _check_gamma(gamma, positive=True)
    beta = float(beta.item() if isinstance(beta, Tensor) else beta)
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta}")
    _check_reduction(reduction)
    return _FocalStar.apply(logits, targets, gamma, beta, reduction)

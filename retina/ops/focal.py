"""The focal loss family (Lin et al., ICCV 2017) as fused autograd Functions.

Each public function validates its arguments, then runs a ``torch.autograd.Function``
whose forward evaluates the loss from logits in one kernel and whose backward recomputes
the analytic gradient from the saved *inputs* only, so no (N, K) intermediate outlives the
forward pass. The sigmoid losses run one-pass fused kernels (one pass over memory each
way): the C kernels of :mod:`retina.ops.focal_native` on float32 CPU inputs, the Triton
kernels of :mod:`retina.ops.focal_triton` on CUDA inputs; everything else runs the ATen
kernels of :mod:`retina.ops.focal_kernels`, eagerly or compiled (see
:mod:`retina.ops.focal_backend`).
The readable formulas these are tested against live in :mod:`retina.ops.focal_reference`.

Cross-entropy baselines are the same functions: CE is ``gamma=0, alpha=None`` and the
alpha-balanced CE is ``gamma=0``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from retina.ops import focal_kernels as fk
from retina.ops.focal_backend import fused_module, get_backend, kernel, use_backend

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


def _in_forward_backend(backward: Callable[..., Any]) -> Callable[..., Any]:
    """Run an autograd Function's backward under the backend its forward ran with (a loss's
    :func:`~retina.ops.focal_backend.use_backend` has ended by the time autograd calls it)."""

    @functools.wraps(backward)
    def run(ctx: Any, *grads: Any) -> Any:
        with use_backend(ctx.backend):
            return backward(ctx, *grads)

    return run


# --------------------------------------------------------------------------- sigmoid FL
class _SigmoidFocal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, alpha, gamma, reduction):  # type: ignore[override]
        ctx.backend = get_backend()  # the backward runs under the same backend
        ctx.save_for_backward(logits, targets)
        fused = fused_module(logits)
        if fused is not None:  # one pass; exact for hard and soft targets alike
            ctx.params = (alpha, gamma, reduction, fused)
            loss = fused.dense_forward(logits, targets, alpha, gamma, reduction != "none")
        else:
            hard = _all_zero_or_one(targets)
            ctx.params = (alpha, gamma, reduction, hard)
            fwd = kernel(fk.hard_focal_forward if hard else fk.sigmoid_focal_forward)
            loss = fwd(logits, targets, alpha, gamma, reduction != "none")
        if reduction == "mean":
            loss = loss / max(logits.numel(), 1)
        return loss.to(logits.dtype)

    @staticmethod
    @_in_forward_backend
    def backward(ctx, grad_out):  # type: ignore[override]
        logits, targets = ctx.saved_tensors
        alpha, gamma, reduction, hard = ctx.params
        if reduction == "mean":
            grad_out = grad_out / max(logits.numel(), 1)
        if not isinstance(hard, bool) and not ctx.needs_input_grad[1]:  # a fused module
            gx = hard.dense_backward(logits, targets, alpha, gamma, grad_out)
            return gx.to(logits.dtype), None, None, None, None
        if hard is True and not ctx.needs_input_grad[1]:
            gx = kernel(fk.hard_focal_backward)(logits, targets, alpha, gamma, grad_out)
            return gx.to(logits.dtype), None, None, None, None
        bwd = kernel(fk.sigmoid_focal_backward)
        gx, gt = bwd(logits, targets, alpha, gamma, grad_out, ctx.needs_input_grad[1])
        gx = gx.to(logits.dtype) if ctx.needs_input_grad[0] else None
        gt = gt.to(targets.dtype) if gt is not None else None
        return gx, gt, None, None, None


def _all_zero_or_one(targets: Tensor) -> bool:
    """Whether every target is exactly 0 or 1 (then the cheaper hard-target kernels apply)."""
    return bool(torch.logical_or(targets == 0, targets == 1).all())


def sigmoid_focal_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Tensor:
    """Sigmoid focal loss FL = -alpha_t (1 - p_t)^gamma log(p_t), a drop-in for torchvision's.

    Args:
        logits: (*) float logits; float16/bfloat16 are computed in float32.
        targets: (*) same shape, 0/1 or soft values in [0, 1] (receives a gradient if needed).
        alpha: weight of the positive class in [0, 1]; None or < 0 disables alpha_t.
        gamma: focusing parameter >= 0; 0 gives (alpha-balanced) cross entropy.
        reduction: "none" (shape of logits) | "mean" | "sum" (0-d).

    Returns:
        The loss in ``logits.dtype``.
    """
    _check_logits(logits)
    _check_targets(logits, targets)
    alpha = _check_alpha(alpha)
    gamma = _check_gamma(gamma)
    _check_reduction(reduction)
    return _SigmoidFocal.apply(logits, targets, alpha, gamma, reduction)


# --------------------------------------------------------------------------- from labels
class _SigmoidFocalFromLabels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, alpha, gamma, reduction, fused):  # type: ignore[override]
        ctx.backend = get_backend()  # the backward runs under the same backend
        ctx.save_for_backward(logits, labels)
        ctx.params = (alpha, gamma, reduction)
        ctx.fused_grad = None
        impl = fused_module(logits)
        if impl is not None and fused and reduction != "none" and ctx.needs_input_grad[0]:
            # one pass for loss and gradient; the gradient waits for backward
            loss, ctx.fused_grad = impl.labels_forward_backward(logits, labels, alpha, gamma)
        elif impl is not None:
            loss = impl.labels_forward(logits, labels, alpha, gamma, reduction != "none")
        else:
            fwd = kernel(fk.from_labels_forward)
            loss = fwd(logits, labels[:, None], alpha, gamma, reduction != "none")
        return (loss * _mean_scale(logits, labels, reduction)).to(logits.dtype)

    @staticmethod
    @_in_forward_backend
    def backward(ctx, grad_out):  # type: ignore[override]
        logits, labels = ctx.saved_tensors
        alpha, gamma, reduction = ctx.params
        grad_out = grad_out * _mean_scale(logits, labels, reduction)
        if ctx.fused_grad is not None:  # used once; a second backward recomputes
            grad, ctx.fused_grad = ctx.fused_grad, None
            return grad.mul_(grad_out.to(grad.dtype)), None, None, None, None, None
        impl = fused_module(logits)
        if impl is not None:
            grad = impl.labels_backward(logits, labels, alpha, gamma, grad_out)
        else:
            grad = kernel(fk.from_labels_backward)(logits, labels[:, None], alpha, gamma, grad_out)
        return grad.to(logits.dtype), None, None, None, None, None


def _mean_scale(logits: Tensor, labels: Tensor, reduction: str) -> float:
    """1 / (num_non_ignored_rows * K) for "mean", else 1."""
    if reduction != "mean":
        return 1.0
    return 1.0 / max(int((labels >= -1).sum().item()) * logits.shape[1], 1)


def sigmoid_focal_loss_from_labels(
    logits: Tensor,
    labels: Tensor,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "sum",
    *,
    fused_backward: bool = False,
) -> Tensor:
    """Sigmoid focal loss against integer labels, without materialising a one-hot target.

    One fused kernel forms the target as the broadcast comparison ``labels[:, None] ==
    arange(K)`` and sums the elementwise loss of every non-ignored entry (no difference of
    large sums, so confident positives cannot cancel a small background loss). In the
    fused C and Triton kernels and compiled, the comparison is fused into the loop and nothing of
    size (N, K) besides the output gradient is materialised; with the eager ATen kernels it
    exists per row chunk only (bounded by ``focal_backend.EAGER_CHUNK_NUMEL``).

    Args:
        logits: (N, K) float logits.
        labels: (N,) int64: class index >= 0 (positive), -1 (background), -2 (ignored).
        alpha, gamma: as in :func:`sigmoid_focal_loss`.
        reduction: "sum" (0-d), "mean" (sum / (num_non_ignored * K)) or "none" ((N, K),
            zero on ignored rows).
        fused_backward: compute the gradient in the same pass as the loss and keep it for
            the backward, instead of saving only the inputs and recomputing: one pass over
            the logits instead of two, at the cost of holding one (N, K) gradient tensor from
            forward to backward. Applies to the fused kernels (float32 CPU; float32, float16
            or bfloat16 CUDA) with a "sum" or "mean" reduction when the logits need a
            gradient; ignored otherwise.
    """
    _check_logits(logits, ndim=2)
    _check_labels(logits, labels, low=-2)
    alpha = _check_alpha(alpha)
    gamma = _check_gamma(gamma)
    _check_reduction(reduction)
    return _SigmoidFocalFromLabels.apply(
        logits, labels, alpha, gamma, reduction, bool(fused_backward)
    )


# --------------------------------------------------------------------------- softmax FL
class _SoftmaxFocal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, labels, alpha, gamma, reduction):  # type: ignore[override]
        ctx.backend = get_backend()  # the backward runs under the same backend
        ctx.save_for_backward(logits, labels, alpha)
        ctx.params = (gamma, reduction)
        x = logits.to(fk.compute_dtype(logits.dtype))
        log_p, keep, a_y, _ = _softmax_parts(x, labels, alpha)
        loss = -_power(-torch.expm1(log_p), gamma) * log_p * a_y * keep
        if reduction == "sum":
            loss = loss.sum()
        elif reduction == "mean":
            loss = loss.sum() / keep.sum().clamp_min(1)
        return loss.to(logits.dtype)

    @staticmethod
    @_in_forward_backend
    def backward(ctx, grad_out):  # type: ignore[override]
        logits, labels, alpha = ctx.saved_tensors
        gamma, reduction = ctx.params
        x = logits.to(fk.compute_dtype(logits.dtype))
        log_p, keep, a_y, lse = _softmax_parts(x, labels, alpha)
        p = log_p.exp()
        one_minus_p = -torch.expm1(log_p)
        # dFL/dlog p_y = -a_y (1 - p)^g (1 - g log(p) p / (1 - p))
        ratio = torch.where(one_minus_p > 0, p / one_minus_p, 0.0)
        coef = -a_y * keep * _power(one_minus_p, gamma) * (1 - gamma * log_p * ratio)
        if reduction == "mean":
            grad_out = grad_out / keep.sum().clamp_min(1)
        coef = coef * grad_out.to(coef.dtype)
        grad = torch.exp(x - lse[:, None]).mul_(-coef[:, None])
        grad.scatter_add_(1, labels.clamp_min(0)[:, None], coef[:, None])
        return grad.to(logits.dtype), None, None, None, None


def _softmax_parts(
    x: Tensor, labels: Tensor, alpha: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(log p_y (N,), valid mask (N,), alpha_y (N,) or 1, logsumexp (N,)) without (N, C) temps."""
    y = labels.clamp_min(0)
    lse = torch.logsumexp(x, dim=1)
    log_p = x.gather(1, y[:, None]).squeeze(1) - lse
    keep = (labels >= 0).to(x.dtype)
    a_y = alpha.to(x.dtype)[y] if alpha is not None else torch.ones_like(log_p)
    return log_p, keep, a_y, lse


def _power(m: Tensor, gamma: float) -> Tensor:
    return torch.ones_like(m) if gamma == 0.0 else m.pow(gamma)


def softmax_focal_loss(
    logits: Tensor,
    labels: Tensor,
    alpha: Tensor | None = None,
    gamma: float = 2.0,
    reduction: str = "sum",
) -> Tensor:
    """Multi-class focal loss -sum_c alpha_c (1 - p_c)^gamma y_c log p_c, p = softmax(logits).

    Args:
        logits: (N, C) float logits.
        labels: (N,) integer class indices in [0, C); negative labels are ignored rows.
        alpha: per-class weights (C,) >= 0, or None (no weighting); receives no gradient.
        gamma: focusing parameter >= 0.
        reduction: "sum" | "mean" (over non-ignored rows) | "none" ((N,), 0 on ignored rows).
    """
    _check_logits(logits, ndim=2)
    _check_labels(logits, labels, low=-(2**62))
    gamma = _check_gamma(gamma)
    _check_reduction(reduction)
    if alpha is not None:
        if not isinstance(alpha, Tensor) or alpha.shape != (logits.shape[1],):
            raise ValueError(
                f"alpha must be None or a tensor of shape ({logits.shape[1]},), "
                f"got {tuple(alpha.shape) if isinstance(alpha, Tensor) else _describe(alpha)}"
            )
        alpha = alpha.detach().to(logits.device)
        if not bool(torch.isfinite(alpha).all()) or bool((alpha < 0).any()):
            raise ValueError("alpha must hold finite, non-negative per-class weights")
    return _SoftmaxFocal.apply(logits, labels, alpha, gamma, reduction)


# --------------------------------------------------------------------------- FL*
class _FocalStar(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, gamma, beta, reduction):  # type: ignore[override]
        ctx.backend = get_backend()  # the backward runs under the same backend
        ctx.save_for_backward(logits, targets)
        ctx.params = (gamma, beta, reduction)
        loss = kernel(fk.focal_star_forward)(logits, targets, gamma, beta, reduction != "none")
        if reduction == "mean":
            loss = loss / max(logits.numel(), 1)
        return loss.to(logits.dtype)

    @staticmethod
    @_in_forward_backend
    def backward(ctx, grad_out):  # type: ignore[override]
        logits, targets = ctx.saved_tensors
        gamma, beta, reduction = ctx.params
        if reduction == "mean":
            grad_out = grad_out / max(logits.numel(), 1)
        bwd = kernel(fk.focal_star_backward)
        gx, gt = bwd(logits, targets, gamma, beta, grad_out, ctx.needs_input_grad[1])
        gx = gx.to(logits.dtype) if ctx.needs_input_grad[0] else None
        gt = gt.to(targets.dtype) if gt is not None else None
        return gx, gt, None, None, None


def focal_loss_star(
    logits: Tensor,
    targets: Tensor,
    gamma: float = 4.0,
    beta: float = 0.0,
    reduction: str = "none",
) -> Tensor:
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

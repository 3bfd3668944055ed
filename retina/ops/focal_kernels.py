"""Elementwise math of the fused focal-loss kernels (forward values and analytic gradients).

Pure tensor functions with no autograd: :mod:`retina.ops.focal` calls them from its
``torch.autograd.Function`` s, either eagerly or through ``torch.compile``, which fuses
each one into a single pass over memory. All math runs in ``float32`` (``float64`` for
``float64`` inputs); the casts are inside the kernels so that a compiled kernel reads
half-precision inputs directly.

Notation (paper, Appendix B): p = sigmoid(x), q = 1 - p = sigmoid(-x), computed from
e = exp(-|x|) without cancellation; softplus(-|x|) = log1p(e). For a target t in [0, 1]
m = 1 - p_t = p (1 - t) + q t and p - t = p (1 - t) - q t, both cancellation-free for
hard targets. Derivatives:

    FL = a_t m^g ce,    dFL/dx = a_t m^g ((p - t) + g (p q / m) (1 - 2 t) ce),

where p q / m <= max(p, q) is bounded (m is a convex combination of p and q); with
t = 1 this is the paper's y (1 - p_t)^g (g p_t log p_t + p_t - 1).
"""

from __future__ import annotations

import torch
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _sigmoid_parts(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(p, q, softplus(-|x|)) = (sigmoid(x), sigmoid(-x), log1p(exp(-|x|))), all stable."""
    e = torch.exp(-x.abs())
    big = 1.0 / (1.0 + e)
    small = e * big
    nonneg = x >= 0
    return torch.where(nonneg, big, small), torch.where(nonneg, small, big), torch.log1p(e)


def _power(m: Tensor, gamma: float) -> Tensor:
    if gamma == 1.0:
        return m
    if gamma == 2.0:
        return m * m
    return m.pow(gamma)


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den where den > 0, else 0 (there the factor it multiplies is 0 as well)."""
    return torch.where(den > 0, num / den, 0.0)


def sigmoid_focal_forward(
    x: Tensor, t: Tensor, alpha: float | None, gamma: float, reduce_sum: bool
) -> Tensor:
    """Elementwise FL(x, t), or its float sum when ``reduce_sum``; x, t: same shape."""
    dt = compute_dtype(x.dtype)
    x = x.to(dt)
    t = t.to(dt)
    p, q, sp = _sigmoid_parts(x)
    loss = x.clamp_min(0) - x * t + sp
    if gamma != 0.0:
        loss = loss * _power(p * (1 - t) + q * t, gamma)
    if alpha is not None:
        loss = loss * ((1 - alpha) + (2 * alpha - 1) * t)
    return loss.sum() if reduce_sum else loss


def sigmoid_focal_backward(
    x: Tensor, t: Tensor, alpha: float | None, gamma: float, grad: Tensor, need_t: bool
) -> tuple[Tensor, Tensor | None]:
    """(dFL/dx * grad, dFL/dt * grad or None); grad broadcasts against x (0-d for sums)."""
    dt = compute_dtype(x.dtype)
    x = x.to(dt)
    t = t.to(dt)
    grad = grad.to(dt)
    p, q, sp = _sigmoid_parts(x)
    ce = x.clamp_min(0) - x * t + sp
    one_minus_t = 1 - t
    gx = p * one_minus_t - q * t
    gt = None
    if gamma != 0.0:
        m = p * one_minus_t + q * t
        w = _power(m, gamma)
        gx = w * (gx + gamma * _safe_ratio(p * q, m) * (one_minus_t - t) * ce)
        if need_t:
            gt = w * (gamma * _safe_ratio(q - p, m) * ce - x)
    elif need_t:
        gt = -x
    if alpha is not None:
        a_t = (1 - alpha) + (2 * alpha - 1) * t
        if need_t:
            w_ce = ce if gamma == 0.0 else ce * _power(p * one_minus_t + q * t, gamma)
            gt = a_t * gt + (2 * alpha - 1) * w_ce
        gx = a_t * gx
    gx = gx * grad
    return gx, (gt * grad if gt is not None else None)


def negative_focal_terms(
    x: Tensor, weight: float, gamma: float, need_loss: bool, need_grad: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Loss and gradient of the all-negative (t = 0) focal loss, elementwise.

    FL0 = w p^g softplus(x); dFL0/dx = w p^g (p + g q softplus(x)). The positive case is the
    mirror image: FL1(x) = FL0(-x) with the positive weight, dFL1/dx = -dFL0/dx(-x).
    """
    dt = compute_dtype(x.dtype)
    x = x.to(dt)
    p, q, sp = _sigmoid_parts(x)
    ce = x.clamp_min(0) + sp
    w = _power(p, gamma) * weight if gamma != 0.0 else None
    loss = grad = None
    if need_loss:
        loss = ce * w if w is not None else ce * weight
    if need_grad:
        grad = w * (p + gamma * q * ce) if w is not None else p * weight
    return loss, grad


def negative_focal_rows(
    x: Tensor, valid: Tensor | None, weight: float, gamma: float, reduce_sum: bool
) -> Tensor:
    """All-negative focal loss of logits (N, K), rows masked by ``valid`` (N, 1) or None."""
    loss, _ = negative_focal_terms(x, weight, gamma, True, False)
    if valid is not None:
        loss = loss * valid
    return loss.sum() if reduce_sum else loss


def negative_focal_rows_grad(
    x: Tensor, valid: Tensor | None, weight: float, gamma: float, grad: Tensor
) -> Tensor:
    """d(all-negative focal loss)/dx * grad for logits (N, K); ``grad`` 0-d or (N, K)."""
    _, g = negative_focal_terms(x, weight, gamma, False, True)
    g = g * grad.to(g.dtype)
    if valid is not None:
        g = g * valid
    return g


def focal_star_forward(x: Tensor, t: Tensor, gamma: float, beta: float, reduce_sum: bool) -> Tensor:
    """FL* = (t softplus(-(g x + b)) + (1 - t) softplus(g x - b)) / g, elementwise or summed."""
    dt = compute_dtype(x.dtype)
    x = x.to(dt)
    t = t.to(dt)
    z = gamma * x
    loss = (t * _softplus(-z - beta) + (1 - t) * _softplus(z - beta)) / gamma
    return loss.sum() if reduce_sum else loss


def focal_star_backward(
    x: Tensor, t: Tensor, gamma: float, beta: float, grad: Tensor, need_t: bool
) -> tuple[Tensor, Tensor | None]:
    """dFL*/dx = -t sigmoid(-(g x + b)) + (1 - t) sigmoid(g x - b), i.e. y (p*_t - 1)."""
    dt = compute_dtype(x.dtype)
    x = x.to(dt)
    t = t.to(dt)
    grad = grad.to(dt)
    z = gamma * x
    gx = (1 - t) * torch.sigmoid(z - beta) - t * torch.sigmoid(-z - beta)
    gt = None
    if need_t:
        gt = (_softplus(-z - beta) - _softplus(z - beta)) / gamma * grad
    return gx * grad, gt


def _softplus(z: Tensor) -> Tensor:
    """log(1 + exp(z)) without overflow and without a linear cut-off."""
    return z.clamp_min(0) + torch.log1p(torch.exp(-z.abs()))

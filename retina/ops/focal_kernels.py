"""Elementwise math of the fused focal-loss kernels (forward values and analytic gradients).

Pure tensor functions with no autograd: :mod:`retina.ops.focal` calls them from its
``torch.autograd.Function`` s on bounded row chunks (see :mod:`retina.ops.focal_backend`).
All math runs in ``float32`` (``float64`` for ``float64`` inputs); the casts are inside the
kernels, per chunk.

The kernels are written for the eager path: few fused ATen ops (``sigmoid``,
``softplus``, ``lerp``) and in-place updates of the few buffers they allocate, so each
eager call makes a small number of passes over its chunk.

Notation (paper, Appendix B): p = sigmoid(x), q = sigmoid(-x), both computed directly
(never as 1 - p). For a target t in [0, 1]

    m = 1 - p_t = lerp(p, q, t),  ce = lerp(softplus(x), softplus(-x), t),
    p - t = lerp(p, -q, t),

which ``lerp`` returns exactly at t = 0 and t = 1 (no cancellation for hard targets).
Derivatives:

    FL = a_t m^g ce,    dFL/dx = a_t m^g ((p - t) + g (p q / m) (1 - 2 t) ce),

where p q / m <= max(p, q) and ce / m are bounded. With integer labels every target is hard: with
z = x for a negative and z = -x for a positive, FL = w sigmoid(z)^g softplus(z) and
dFL/dz = w sigmoid(z)^g (sigmoid(z) + g (1 - sigmoid(z)) softplus(z)), the paper's
y (1 - p_t)^g (g p_t log p_t + p_t - 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _softplus(z: Tensor) -> Tensor:
    """log(1 + exp(z)); ATen's linear cut-off is placed where its error is below rounding."""
    return F.softplus(z, beta=1.0, threshold=40.0 if z.dtype == torch.float64 else 20.0)


def _pow_(m: Tensor, gamma: float) -> Tensor:
    """m ** gamma in place (gamma > 0)."""
    if gamma == 1.0:
        return m
    if gamma == 2.0:
        return m.mul_(m)
    return m.pow_(gamma)


def _alpha_t(t: Tensor, alpha: float) -> Tensor:
    """alpha_t = alpha t + (1 - alpha)(1 - t), elementwise."""
    return torch.mul(t, 2 * alpha - 1).add_(1 - alpha)


def _alpha_t_partial_(v: Tensor, t: Tensor, alpha: float | None) -> float:
    """Multiply v in place by alpha_t / f in one pass and return the scalar f, so that
    v * f == v * alpha_t (f is folded into a later scalar product or sum)."""
    if alpha is None:
        return 1.0
    if alpha == 1.0:
        v.mul_(t)
        return 1.0
    v.addcmul_(v, t, value=(2 * alpha - 1) / (1 - alpha))  # v (1 + c t), elementwise alias
    return 1.0 - alpha


def _ce_and_parts(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(ce, p, q) of logits x and targets t, all of x's shape."""
    q = torch.neg(x)
    ce = _softplus(x).lerp_(_softplus(q), t)
    return ce, torch.sigmoid(x), q.sigmoid_()


# --------------------------------------------------------------------------- dense targets
def sigmoid_focal_forward(
    x: Tensor, t: Tensor, alpha: float | None, gamma: float, reduce_sum: bool
) -> Tensor:
    """Elementwise FL(x, t), or its float sum when ``reduce_sum``; x, t: same shape."""
    dt = compute_dtype(x.dtype)
    x = x.to(dt)
    t = t.to(dt)
    if gamma == 0.0:
        loss = _softplus(x).lerp_(_softplus(-x), t)
    else:
        loss, p, q = _ce_and_parts(x, t)
        loss.mul_(_pow_(p.lerp_(q, t), gamma))
    f = _alpha_t_partial_(loss, t, alpha)
    if reduce_sum:
        return loss.sum() * f
    return loss.mul_(f) if f != 1.0 else loss


def sigmoid_focal_backward(
    x: Tensor, t: Tensor, alpha: float | None, gamma: float, grad: Tensor, need_t: bool
) -> tuple[Tensor, Tensor | None]:
    """(dFL/dx * grad, dFL/dt * grad or None); grad broadcasts against x (0-d for sums)."""
    dt = compute_dtype(x.dtype)
    x = x.to(dt)
    t = t.to(dt)
    grad = grad.to(dt)
    if need_t:
        return _sigmoid_focal_backward_xt(x, t, alpha, gamma, grad)
    if gamma == 0.0:
        gx = torch.sigmoid(x).lerp_(torch.sigmoid(x.neg()).neg_(), t)  # p - t
    else:
        ce, p, q = _ce_and_parts(x, t)
        m = torch.lerp(p, q, t)
        gx = torch.lerp(p, q.neg(), t)  # p - t
        # (1 - 2 t) p q ce, the shared factor of the focal term of the gradient
        pqce = p.mul_(q).mul_(ce)
        pqce.addcmul_(pqce, t, value=-2.0)
        if gamma >= 1.0:  # m^(g-1) (m (p - t) + g (1 - 2 t) p q ce)
            gx.mul_(m).add_(pqce, alpha=gamma)
            if gamma != 1.0:
                gx.mul_(m if gamma == 2.0 else m.pow_(gamma - 1.0))
        else:  # m^g ((p - t) + g (1 - 2 t) p q ce / m), 0 where m = 0 (there m^g = 0 too)
            gx.add_(torch.where(m > 0, pqce.div_(m), 0.0), alpha=gamma).mul_(m.pow_(gamma))
    f = _alpha_t_partial_(gx, t, alpha)
    if grad.dim() == 0:
        return gx.mul_(grad * f), None
    gx = gx.mul_(grad)
    return (gx.mul_(f) if f != 1.0 else gx), None


def _sigmoid_focal_backward_xt(
    x: Tensor, t: Tensor, alpha: float | None, gamma: float, grad: Tensor
) -> tuple[Tensor, Tensor]:
    """(dFL/dx * grad, dFL/dt * grad) for soft targets that need a gradient."""
    ce, p, q = _ce_and_parts(x, t)
    m = torch.lerp(p, q, t)
    gx = torch.lerp(p, q.neg(), t)  # p - t
    gt = torch.neg(x)  # d ce / dt
    if gamma != 0.0:
        # ce / m is bounded (about max(1, |x|)); 0 where m = 0, where w = 0 as well.
        r = torch.where(m > 0, ce / m, 0.0)
        w = _pow_(m, gamma)
        gt.addcmul_(torch.sub(q, p), r, value=gamma).mul_(w)
        ratio = p.mul_(q).mul_(r)
        gx.addcmul_(ratio, torch.mul(t, -2.0).add_(1.0), value=gamma).mul_(w)
        ce.mul_(w)
    if alpha is not None:
        a_t = _alpha_t(t, alpha)
        gt.mul_(a_t).add_(ce, alpha=2 * alpha - 1)
        gx.mul_(a_t)
    return gx.mul_(grad), gt.mul_(grad)


# --------------------------------------------------------------------------- 0/1 targets
def hard_focal_forward(
    x: Tensor, t: Tensor, alpha: float | None, gamma: float, reduce_sum: bool
) -> Tensor:
    """:func:`sigmoid_focal_forward` for targets that are all exactly 0 or 1.

    With z = x (1 - 2 t) (exactly x or -x), FL = a_t sigmoid(z)^g softplus(z): two
    transcendental passes instead of four.
    """
    dt = compute_dtype(x.dtype)
    x = x.to(dt)
    t = t.to(dt)
    z = torch.addcmul(x, x, t, value=-2.0)
    loss = _softplus(z)
    if gamma != 0.0:
        loss.mul_(_pow_(z.sigmoid_(), gamma))
    f = _alpha_t_partial_(loss, t, alpha)
    if reduce_sum:
        return loss.sum() * f
    return loss.mul_(f) if f != 1.0 else loss


def hard_focal_backward(
    x: Tensor, t: Tensor, alpha: float | None, gamma: float, grad: Tensor
) -> Tensor:
    """dFL/dx * grad for 0/1 targets: dFL/dz (1 - 2 t), dFL/dz as in the label kernels."""
    dt = compute_dtype(x.dtype)
    x = x.to(dt)
    t = t.to(dt)
    grad = grad.to(dt)
    z = torch.addcmul(x, x, t, value=-2.0)
    g = _dfl_dz(z, gamma)
    # a_t (1 - 2 t) = (1 - alpha) - t for t in {0, 1}; (1 - 2 t) without alpha.
    if alpha is None:
        g.addcmul_(g, t, value=-2.0)
        f = 1.0
    elif alpha == 1.0:
        g.mul_(t).neg_()
        f = 1.0
    else:
        g.addcmul_(g, t, value=-1.0 / (1.0 - alpha))
        f = 1.0 - alpha
    if grad.dim() == 0:
        return g.mul_(grad * f)
    g = g.mul_(grad)
    return g.mul_(f) if f != 1.0 else g


def _dfl_dz(z: Tensor, gamma: float) -> Tensor:
    """d(sigmoid(z)^g softplus(z))/dz = p^g (p + g (1 - p) softplus(z)); z is overwritten.

    1 - p is exact where its term matters (p not close to 1)."""
    if gamma == 0.0:
        return z.sigmoid_()
    sp = _softplus(z)
    p = z.sigmoid_()
    g = torch.addcmul(p, sp, torch.rsub(p, 1.0), value=gamma)
    return g.mul_(_pow_(p, gamma))


# --------------------------------------------------------------------------- integer labels
def _signed_logits(
    x: Tensor, labels: Tensor, alpha: float | None, dt: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """(z, positive mask, per-row negative weight) for logits (n, K) and labels (n, 1).

    The one-hot target is the broadcast comparison ``labels == arange(K)``, a (n, K) bool
    mask of one chunk. z = -x at the label
    column, x elsewhere; the negative weight is 1 - alpha (1 without alpha), 0 on ignored rows.
    """
    x = x.to(dt)
    pos = labels == torch.arange(x.shape[1], device=x.device)
    neg_w = 1.0 if alpha is None else 1.0 - alpha
    row_w = (labels >= -1).to(dt).mul_(neg_w)
    return torch.where(pos, x.neg(), x), pos, row_w


def from_labels_forward(
    x: Tensor, labels: Tensor, alpha: float | None, gamma: float, reduce_sum: bool
) -> Tensor:
    """Focal loss of logits x (n, K) against labels (n, 1): (n, K), 0 on ignored rows, or its
    float sum when ``reduce_sum``. Every entry is its own elementwise term (no correction
    of a larger sum), so confident positives keep the small background loss exact."""
    dt = compute_dtype(x.dtype)
    z, pos, row_w = _signed_logits(x, labels, alpha, dt)
    w = torch.where(pos, 1.0 if alpha is None else alpha, row_w)
    loss = _softplus(z)
    if gamma != 0.0:
        loss.mul_(_pow_(z.sigmoid_(), gamma))
    loss = loss.mul_(w)  # (a BLAS dot would accumulate in float32 without pairwise sums)
    return loss.sum() if reduce_sum else loss


def from_labels_backward(
    x: Tensor, labels: Tensor, alpha: float | None, gamma: float, grad: Tensor
) -> Tensor:
    """dFL/dx * grad for logits x (n, K) and labels (n, 1); ``grad`` 0-d or (n, K)."""
    dt = compute_dtype(x.dtype)
    z, pos, row_w = _signed_logits(x, labels, alpha, dt)
    grad = grad.to(dt)
    if grad.dim() == 0:  # fold the scalar into the (n, 1) row weights and the positive one
        row_w = row_w.mul_(grad)
        sw = torch.where(pos, -(1.0 if alpha is None else alpha) * grad, row_w)
    else:
        sw = torch.where(pos, -(1.0 if alpha is None else alpha), row_w).mul_(grad)
    return _dfl_dz(z, gamma).mul_(sw)


# --------------------------------------------------------------------------- FL*
def focal_star_forward(x: Tensor, t: Tensor, gamma: float, beta: float, reduce_sum: bool) -> Tensor:
    """FL* = (t softplus(-(g x + b)) + (1 - t) softplus(g x - b)) / g, elementwise or summed."""
    dt = compute_dtype(x.dtype)
    x = x.to(dt)
    t = t.to(dt)
    z = gamma * x
    loss = (t * _softplus_exact(-z - beta) + (1 - t) * _softplus_exact(z - beta)) / gamma
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
        gt = (_softplus_exact(-z - beta) - _softplus_exact(z - beta)) / gamma * grad
    return gx * grad, gt


def _softplus_exact(z: Tensor) -> Tensor:
    """log(1 + exp(z)) without overflow and without a linear cut-off."""
    return z.clamp_min(0) + torch.log1p(torch.exp(-z.abs()))

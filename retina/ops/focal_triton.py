"""Fused CUDA focal-loss kernels in Triton: one pass over memory per forward or backward.

The formulas of :mod:`retina.ops.focal_kernels` (paper, Appendix B), one pass each: the
forward reads the logits and the targets (or the per-row labels) and writes only per-block
float64 partial sums (or the elementwise loss); the backward reads the same inputs and
writes the gradient. Logits may be float32, float16 or bfloat16: every value is computed in
float32 and the gradient is written in the logits' dtype. Partial sums are reduced by the
caller in float64 in a fixed order, so results are deterministic (no atomics).

The labels kernels walk the (N, K) logits as one flat array and find each element's row by
dividing by K, a compile-time constant (one kernel per number of classes), so any K is
coalesced. The upstream gradient is read on the device (a 0-d tensor is never ``.item()``-ed,
so no host synchronisation).

Kernels are compiled by Triton on first use per (dtype, K, gamma mode) in a process (about a
second each). :func:`supports` is false without Triton (then :mod:`retina.ops.focal_backend`
runs the eager ATen kernels). With ``TRITON_INTERPRET=1`` set before this module is
imported, the same kernels run on CPU tensors through Triton's interpreter, which is how
they are tested on machines without a GPU.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - Triton ships with CUDA builds of PyTorch on Linux
    triton = None
    tl = None

BLOCK = 1024
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_INT32_LIMIT = 2**31 - BLOCK


def available() -> bool:
    """Whether Triton is importable."""
    return triton is not None


def supports(x: Tensor) -> bool:
    """Whether ``x`` can run these kernels: a float32/float16/bfloat16 CUDA tensor."""
    return available() and x.is_cuda and x.dtype in _DTYPES


def _gamma_mode(gamma: float) -> int:
    return 0 if gamma == 0.0 else 1 if gamma == 1.0 else 2 if gamma == 2.0 else 3


if triton is not None:

    @triton.jit
    def _sigmoid_parts(x):
        """(e = exp(-|x|), p = sigmoid(x), q = sigmoid(-x), log1p(e)); p, q never as 1 - ..."""
        e = tl.exp(-tl.abs(x))
        d = 1.0 / (1.0 + e)
        p = tl.where(x >= 0.0, d, e * d)
        q = tl.where(x >= 0.0, e * d, d)
        u = 1.0 + e
        # log1p(e) for e in [0, 1]: log(u) * e / (u - 1) corrects the rounding of 1 + e
        exact = u == 1.0
        l1p = tl.where(exact, e, tl.log(u) * (e / tl.where(exact, 1.0, u - 1.0)))
        return e, p, q, l1p

    @triton.jit
    def _pow(m, logm, gamma, GMODE: tl.constexpr):
        """m^gamma given log(m), m in [0, 1]; GMODE 0/1/2 are gamma 0/1/2, 3 any other."""
        if GMODE == 0:
            r = tl.full(m.shape, 1.0, tl.float32)
        elif GMODE == 1:
            r = m
        elif GMODE == 2:
            r = m * m
        else:
            r = tl.exp(tl.minimum(gamma * logm, 0.0))
        return r

    @triton.jit
    def _offsets(WIDE: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        if WIDE:
            start = pid.to(tl.int64) * BLOCK
        else:
            start = pid * BLOCK
        return start + tl.arange(0, BLOCK)

    @triton.jit
    def _dense_loss_grad(x, t, alpha, gamma, HAS_ALPHA: tl.constexpr, GMODE: tl.constexpr):
        """FL(x, t) and dFL/dx for soft or hard targets t (float32 tensors)."""
        e, p, q, l1p = _sigmoid_parts(x)
        ce = tl.maximum(x, 0.0) - t * x + l1p
        m = (1.0 - t) * p + t * q  # 1 - p_t
        pmt = (1.0 - t) * p - t * q  # p - t, exact for t in {0, 1}
        w = _pow(m, tl.log(m), gamma, GMODE)
        s = (1.0 - 2.0 * t) * p * q * ce
        if GMODE == 0:
            g = pmt
        elif GMODE == 1:
            g = m * pmt + s
        elif GMODE == 2:
            g = m * (m * pmt + 2.0 * s)
        else:
            g = w * (pmt + gamma * tl.where(m > 0.0, s / tl.where(m > 0.0, m, 1.0), 0.0))
        loss = w * ce
        if HAS_ALPHA:
            a_t = (1.0 - alpha) + t * (2.0 * alpha - 1.0)
            loss = loss * a_t
            g = g * a_t
        nan = x != x
        return tl.where(nan, x, loss), tl.where(nan, x, g)

    @triton.jit
    def _labels_loss_grad(x, lab, col, alpha, gamma, HAS_ALPHA: tl.constexpr, GMODE: tl.constexpr):
        """FL and dFL/dx of x against integer labels (0 on ignored rows, label < -1)."""
        pos = lab == col
        z = tl.where(pos, -x, x)
        e, p, q, l1p = _sigmoid_parts(z)
        sp = tl.maximum(z, 0.0) + l1p  # softplus(z) = CE
        logp = tl.minimum(z, 0.0) - l1p  # log sigmoid(z) = log(1 - p_t)
        pw = _pow(p, logp, gamma, GMODE)
        if HAS_ALPHA:
            w = tl.where(pos, alpha, 1.0 - alpha)
        else:
            w = tl.full(x.shape, 1.0, tl.float32)
        loss = w * pw * sp
        if GMODE == 0:
            dz = p
        else:
            dz = pw * (p + gamma * q * sp)
        g = tl.where(pos, -w, w) * dz
        ignored = lab < -1
        nan = z != z
        loss = tl.where(ignored, 0.0, tl.where(nan, z, loss))
        return loss, tl.where(ignored, 0.0, tl.where(nan, z, g))

    @triton.jit
    def _upstream(g_ptr, offs, mask, GRAD_SCALAR: tl.constexpr):
        """The upstream gradient at ``offs`` (one scalar broadcast, or elementwise)."""
        if GRAD_SCALAR:
            up = tl.zeros(offs.shape, tl.float32) + tl.load(g_ptr).to(tl.float32)
        else:
            up = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        return up

    @triton.jit
    def _write(
        loss, g, offs, mask, g_ptr, out_ptr, grad_ptr, part_ptr,
        WRITE_OUT: tl.constexpr, WRITE_PART: tl.constexpr, WRITE_GRAD: tl.constexpr,
        HAS_UPSTREAM: tl.constexpr, GRAD_SCALAR: tl.constexpr,
    ):  # fmt: skip
        """Store what was asked: elementwise loss, this block's loss sum, the gradient."""
        if WRITE_OUT:
            tl.store(out_ptr + offs, loss, mask=mask)
        if WRITE_PART:
            block_sum = tl.sum(tl.where(mask, loss, 0.0), axis=0)
            tl.store(part_ptr + tl.program_id(0), block_sum.to(tl.float64))
        if WRITE_GRAD:
            if HAS_UPSTREAM:
                g = g * _upstream(g_ptr, offs, mask, GRAD_SCALAR)
            tl.store(grad_ptr + offs, g, mask=mask)

    @triton.jit
    def _dense_kernel(
        x_ptr, t_ptr, g_ptr, out_ptr, grad_ptr, part_ptr, n, alpha, gamma,
        HAS_ALPHA: tl.constexpr, GMODE: tl.constexpr,
        WRITE_OUT: tl.constexpr, WRITE_PART: tl.constexpr, WRITE_GRAD: tl.constexpr,
        HAS_UPSTREAM: tl.constexpr, GRAD_SCALAR: tl.constexpr, WIDE: tl.constexpr,
        BLOCK: tl.constexpr,
    ):  # fmt: skip
        """Dense (soft or hard) targets: forward and/or gradient, see :func:`_write`."""
        offs = _offsets(WIDE, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        loss, g = _dense_loss_grad(x, t, alpha, gamma, HAS_ALPHA, GMODE)
        _write(loss, g, offs, mask, g_ptr, out_ptr, grad_ptr, part_ptr,
               WRITE_OUT, WRITE_PART, WRITE_GRAD, HAS_UPSTREAM, GRAD_SCALAR)  # fmt: skip

    @triton.jit
    def _labels_kernel(
        x_ptr, lab_ptr, g_ptr, out_ptr, grad_ptr, part_ptr, n, alpha, gamma,
        HAS_ALPHA: tl.constexpr, GMODE: tl.constexpr,
        WRITE_OUT: tl.constexpr, WRITE_PART: tl.constexpr, WRITE_GRAD: tl.constexpr,
        HAS_UPSTREAM: tl.constexpr, GRAD_SCALAR: tl.constexpr, WIDE: tl.constexpr,
        BLOCK: tl.constexpr, K: tl.constexpr,
    ):  # fmt: skip
        """Integer labels of (N, K) logits walked as one flat array: as :func:`_dense_kernel`."""
        offs = _offsets(WIDE, BLOCK)
        mask = offs < n
        row = offs // K
        col = offs - row * K
        lab = tl.maximum(tl.load(lab_ptr + row, mask=mask, other=-2), -2).to(tl.int32)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        loss, g = _labels_loss_grad(x, lab, col, alpha, gamma, HAS_ALPHA, GMODE)
        _write(loss, g, offs, mask, g_ptr, out_ptr, grad_ptr, part_ptr,
               WRITE_OUT, WRITE_PART, WRITE_GRAD, HAS_UPSTREAM, GRAD_SCALAR)  # fmt: skip


def _launch(
    kernel: Any,
    x: Tensor,
    other: Tensor,
    alpha: float | None,
    gamma: float,
    *,
    want_out: bool = False,
    want_sum: bool = False,
    want_grad: bool = False,
    grad: Tensor | None = None,
    **constants: Any,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Run ``kernel`` over x and ``other`` (targets or labels).

    Returns (elementwise loss float32, float64 0-d sum, gradient in x's dtype), each only
    if asked (else None).
    """
    x, other = x.contiguous(), other.contiguous()
    n = x.numel()
    blocks = triton.cdiv(n, BLOCK) if want_sum else 0
    part = torch.empty(max(blocks, 1), dtype=torch.float64, device=x.device)
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device) if want_out else None
    gx = torch.empty_like(x) if want_grad else None
    g, scalar = _upstream_arg(grad, x) if grad is not None else (None, True)
    if n:  # unused pointers get `part`, never dereferenced
        kernel[(triton.cdiv(n, BLOCK),)](
            x, other, part if g is None else g, part if out is None else out,
            part if gx is None else gx, part, n,
            0.0 if alpha is None else float(alpha), float(gamma),
            HAS_ALPHA=alpha is not None, GMODE=_gamma_mode(float(gamma)),
            WRITE_OUT=want_out, WRITE_PART=want_sum, WRITE_GRAD=want_grad,
            HAS_UPSTREAM=g is not None, GRAD_SCALAR=scalar, WIDE=n >= _INT32_LIMIT,
            BLOCK=BLOCK, **constants,
        )  # fmt: skip
    total = (part.sum() if n else part.new_zeros(())) if want_sum else None
    return out, total, gx


def _upstream_arg(grad: Tensor, like: Tensor) -> tuple[Tensor, bool]:
    """(grad on the device, whether it is one scalar); elementwise grads are made contiguous."""
    if grad.numel() == 1:
        return grad.reshape(1).to(like.device), True
    return grad.expand_as(like).contiguous(), False


def _float_targets(t: Tensor, like: Tensor) -> Tensor:
    return t if t.is_floating_point() else t.to(like.dtype)


def dense_forward(
    x: Tensor, t: Tensor, alpha: float | None, gamma: float, reduce_sum: bool
) -> Tensor:
    """FL(x, t) elementwise (float32, x's shape), or its float64 0-d sum when ``reduce_sum``."""
    out, total, _ = _launch(
        _dense_kernel, x, _float_targets(t, x), alpha, gamma,
        want_out=not reduce_sum, want_sum=reduce_sum,
    )  # fmt: skip
    return total if reduce_sum else out


def dense_backward(x: Tensor, t: Tensor, alpha: float | None, gamma: float, grad: Tensor) -> Tensor:
    """dFL/dx * grad in x's dtype and shape; ``grad`` 0-d or broadcastable to x."""
    t = _float_targets(t, x)
    return _launch(_dense_kernel, x, t, alpha, gamma, want_grad=True, grad=grad)[2]


def labels_forward(
    x: Tensor, labels: Tensor, alpha: float | None, gamma: float, reduce_sum: bool
) -> Tensor:
    """Focal loss of x (N, K) against labels (N,): (N, K) float32, or a float64 0-d sum."""
    out, total, _ = _launch(
        _labels_kernel, x, labels, alpha, gamma,
        want_out=not reduce_sum, want_sum=reduce_sum, K=x.shape[1],
    )  # fmt: skip
    return total if reduce_sum else out


def labels_backward(
    x: Tensor, labels: Tensor, alpha: float | None, gamma: float, grad: Tensor
) -> Tensor:
    """dFL/dx * grad for x (N, K) and labels (N,) in x's dtype; ``grad`` 0-d or (N, K)."""
    return _launch(
        _labels_kernel, x, labels, alpha, gamma, want_grad=True, grad=grad, K=x.shape[1]
    )[2]

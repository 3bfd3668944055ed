"""Which kernels run a focal loss: the Triton kernels on CUDA, or a few ATen ops.

- ``"triton"``: :func:`~retina.ops.sigmoid_focal_loss` and
  :func:`~retina.ops.sigmoid_focal_loss_from_labels` run the one-pass kernels of
  :mod:`retina.ops.focal_triton` on float32/float16/bfloat16 CUDA tensors. Every other input
  (CPU tensors, float64) runs the eager kernels.
- ``"eager"``: the kernels of :mod:`retina.ops.focal_kernels` as a few fused ATen ops on
  row chunks of about :data:`EAGER_CHUNK_NUMEL` elements; needs nothing beyond torch.
- ``"auto"`` (default): ``"triton"`` where Triton imports, else ``"eager"``.

The backend is an argument, never a process-wide setting: of the public functions of
:mod:`retina.ops.focal` (``backend=``), which hand it to their autograd Functions so that the
backward runs the forward's kernels, and of the loss objects of
:mod:`retina.modeling.losses` (``loss.backend`` in the configs). :func:`resolved_backend`
names what a backend runs as on a device; the trainer logs it and writes it into
``metrics.json`` and checkpoints as ``focal_backend``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch

EAGER_CHUNK_NUMEL = 1 << 22
BACKENDS = ("auto", "triton", "eager")


def check_backend(name: str) -> str:
    """``name`` if it is one of :data:`BACKENDS` (``"triton"`` only where Triton imports);
    raises ``ValueError("backend=...: ...")`` otherwise."""
    if name not in BACKENDS:
        raise ValueError(f"backend={name!r}: expected one of {BACKENDS}")
    if name == "triton":
        from retina.ops import focal_triton

        if not focal_triton.available():
            raise ValueError("backend='triton': Triton is not installed (use auto or eager)")
    return name


def resolved_backend(name: str, device_type: str = "cpu") -> str:
    """What backend ``name`` runs as on ``device_type`` (float32 inputs): ``"triton"`` on
    CUDA for ``"auto"`` (where Triton imports) and ``"triton"``, else ``"eager"``."""
    check_backend(name)
    if device_type != "cuda" or name == "eager":
        return "eager"
    from retina.ops import focal_triton

    return "triton" if focal_triton.available() else "eager"


def fused_module(x: torch.Tensor, backend: str) -> ModuleType | None:
    """:mod:`retina.ops.focal_triton` when ``backend`` runs it on ``x`` (a float32, float16
    or bfloat16 CUDA tensor, not being traced by ``torch.compile``), else None (the ATen
    kernels)."""
    if backend == "eager" or not x.is_cuda or torch.compiler.is_compiling():
        return None
    from retina.ops import focal_triton

    return focal_triton if focal_triton.supports(x) else None


def chunked(fn: Callable[..., Any], x: torch.Tensor, *args: Any) -> Any:
    """Run ``fn`` over dim-0 slices of ``x`` (and of every argument with x's leading size),
    about :data:`EAGER_CHUNK_NUMEL` elements each, so that the temporaries of an eager kernel
    stay bounded. 0-d results are summed; tensor results are written into one preallocated
    output."""
    n = x.shape[0] if x.dim() else 0
    rows = max(1, EAGER_CHUNK_NUMEL // max(1, x.numel() // max(n, 1)))
    if torch.compiler.is_compiling() or x.numel() <= EAGER_CHUNK_NUMEL or n <= rows:
        return fn(x, *args)
    outs: list[Any] = []
    for start in range(0, n, rows):
        part = [
            a[start : start + rows]
            if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == n
            else a
            for a in (x, *args)
        ]
        res = fn(*part)
        single = not isinstance(res, tuple)
        res = (res,) if single else res
        if not outs:
            outs = [r if r is None or r.dim() == 0 else r.new_empty((n, *r.shape[1:])) for r in res]
        for i, r in enumerate(res):
            if r is None:
                continue
            if r.dim() == 0:
                outs[i] = r if start == 0 else outs[i] + r
            else:
                outs[i][start : start + rows] = r
    return outs[0] if single else tuple(outs)

"""Chooses how the focal-loss kernels run: native C, eager ATen, or fused by ``torch.compile``.

- ``"native"``: :func:`~retina.ops.sigmoid_focal_loss` and
  :func:`~retina.ops.sigmoid_focal_loss_from_labels` run one-pass fused kernels: on float32
  CPU inputs the C kernels of :mod:`retina.ops.focal_native` (built with the system C
  compiler on first use, about 3 s, then cached), on float32/float16/bfloat16 CUDA inputs
  the Triton kernels of :mod:`retina.ops.focal_triton`. Everything else (float64, CPU half
  precision, soft targets that need a gradient, FL*, softmax FL) runs eagerly.
- ``"eager"`` never compiles (always works): the kernels of :mod:`retina.ops.focal_kernels`
  as a few fused ATen ops on bounded row chunks of about ``EAGER_CHUNK_NUMEL`` elements.
- ``"compile"`` compiles every kernel call with ``torch.compile`` (Inductor fuses each into
  one loop; C++ compiler on CPU, Triton on CUDA); tens of seconds on the first call, so
  opt-in. If compilation fails once it falls back to eager for the rest of the process and
  warns.
- ``"auto"`` (default) is ``"native"`` where the C library builds or Triton imports,
  ``"eager"`` otherwise (a missing compiler gives one warning, never an error).

The choice is recorded with the run: it is an argument of the loss modules
(``loss.backend`` in the configs, :mod:`retina.modeling.losses`), which run their kernels
inside :func:`use_backend`; the resolved name (:func:`resolved_backend`) is written into
``metrics.json`` and checkpoints as ``focal_backend``. The ``RETINA_FOCAL_BACKEND``
environment variable overrides a loss's argument (:func:`requested_backend`) and is the
process default for direct calls of the ops; :func:`set_backend` changes that default.

Kernels are compiled with ``dynamic=True`` (one compilation serves
every batch shape) and ``cpp.vec_isa_ok=True``, which trusts the CPU flags instead of
test-compiling a program per SIMD ISA (about 20 s of a cold first call on a 2-core machine).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch

EAGER_CHUNK_NUMEL = 1 << 22
_BACKENDS = ("auto", "native", "compile", "eager")
BACKENDS = _BACKENDS
ENV_VAR = "RETINA_FOCAL_BACKEND"
_state: dict[str, Any] = {"backend": None, "broken": False}
_local = threading.local()  # .backend: the innermost use_backend() of this thread
_compiled: dict[Callable[..., Any], Callable[..., Any]] = {}


def set_backend(name: str) -> None:
    """Select ``"auto"`` | ``"native"`` | ``"compile"`` | ``"eager"`` for all focal kernels."""
    if name not in _BACKENDS:
        raise ValueError(f"focal backend must be one of {_BACKENDS}, got {name!r}")
    _state["backend"] = name


def get_backend() -> str:
    """The backend in force: the innermost :func:`use_backend` of this thread, else the
    process default (:func:`set_backend`, else ``$RETINA_FOCAL_BACKEND``, else ``"auto"``)."""
    local = getattr(_local, "backend", None)
    if local is not None:
        return local
    if _state["backend"] is None:
        set_backend(os.environ.get(ENV_VAR, "auto"))
    return _state["backend"]


def requested_backend(name: str) -> str:
    """A loss's ``backend`` argument after the environment override: ``$RETINA_FOCAL_BACKEND``
    when set, else ``name``. Raises ``ValueError`` naming the argument or the variable."""
    override = os.environ.get(ENV_VAR)
    if override:
        if override not in _BACKENDS:
            raise ValueError(f"{ENV_VAR}={override!r}: expected one of {_BACKENDS}")
        return override
    if name not in _BACKENDS:
        raise ValueError(f"backend={name!r}: expected one of {_BACKENDS}")
    return name


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the focal kernels called inside (in this thread) with backend ``name``."""
    if name not in _BACKENDS:
        raise ValueError(f"backend={name!r}: expected one of {_BACKENDS}")
    before = getattr(_local, "backend", None)
    _local.backend = name
    try:
        yield
    finally:
        _local.backend = before


def resolved_backend(name: str, device_type: str = "cpu") -> str:
    """What ``name`` runs as on ``device_type``: ``"auto"`` becomes ``"native"`` where the
    fused kernels are available (the C library builds; Triton imports on CUDA), else
    ``"eager"``; the other names stand as they are (float32 inputs assumed)."""
    if name != "auto":
        return name
    if device_type == "cuda":
        from retina.ops import focal_triton

        return "native" if focal_triton.available() else "eager"
    from retina.ops import focal_native

    return "native" if focal_native.available() else "eager"


def fused_module(x: torch.Tensor) -> ModuleType | None:
    """The one-pass kernels for a focal loss on ``x``, or None for the ATen kernels.

    :mod:`retina.ops.focal_native` (C) for float32 CPU tensors and
    :mod:`retina.ops.focal_triton` for float32/float16/bfloat16 CUDA tensors, under the
    ``auto`` and ``native`` backends and when not being traced by ``torch.compile``.
    """
    if get_backend() not in ("auto", "native") or torch.compiler.is_compiling():
        return None
    if x.is_cuda:
        from retina.ops import focal_triton

        return focal_triton if focal_triton.supports(x) else None
    from retina.ops import focal_native

    return focal_native if focal_native.supports(x) else None


def kernel(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` wrapped so that each call runs eagerly or compiled, per the backend."""

    def run(x: torch.Tensor, *args: Any) -> Any:
        backend = get_backend()
        if torch.compiler.is_compiling():
            return fn(x, *args)
        if backend != "compile" or _state["broken"]:
            return _chunked(fn, x, *args)
        try:
            return _compiled_version(fn)(x, *args)
        except Exception as err:  # noqa: BLE001 - any compiler failure means "use eager"
            _state["broken"] = True
            warnings.warn(
                f"torch.compile of {fn.__name__} failed ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); using eager kernels",
                RuntimeWarning,
                stacklevel=2,
            )
            return _chunked(fn, x, *args)

    return run


def _chunked(fn: Callable[..., Any], x: torch.Tensor, *args: Any) -> Any:
    """Run ``fn`` over dim-0 slices of ``x`` (and of every argument with x's leading size).

    0-d results are summed; tensor results are written into one preallocated output.
    """
    n = x.shape[0] if x.dim() else 0
    rows = max(1, EAGER_CHUNK_NUMEL // max(1, x.numel() // max(n, 1)))
    if x.numel() <= EAGER_CHUNK_NUMEL or n <= rows:
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


def _compiled_version(fn: Callable[..., Any]) -> Callable[..., Any]:
    if fn not in _compiled:
        _compiled[fn] = torch.compile(
            fn, dynamic=True, fullgraph=True, options={"cpp.vec_isa_ok": True}
        )
    return _compiled[fn]

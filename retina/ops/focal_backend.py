"""Chooses how the focal-loss kernels run: eagerly, or fused by ``torch.compile``.

``torch.compile`` (Inductor) turns each kernel of :mod:`retina.ops.focal_kernels` into one
loop over memory, which is where the speed-up over torchvision comes from. Compilation
needs a C++ compiler on CPU (Triton on CUDA) and costs seconds on the first call, so:

- ``"eager"`` (default) never compiles (always works);
- ``"compile"`` compiles every kernel call;
- ``"auto"`` compiles only inputs with at least ``AUTO_MIN_NUMEL`` elements,
  where the one-off cost pays for itself; if compilation fails once it falls back to
  eager for the rest of the process and warns.

Select with :func:`set_backend` or the ``RETINA_FOCAL_BACKEND`` environment variable
(read on first use).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import torch

AUTO_MIN_NUMEL = 1 << 20
_BACKENDS = ("auto", "compile", "eager")
_state: dict[str, Any] = {"backend": None, "broken": False}
_compiled: dict[Callable[..., Any], Callable[..., Any]] = {}


def set_backend(name: str) -> None:
    """Select ``"auto"`` | ``"compile"`` | ``"eager"`` for all focal-loss kernels."""
    if name not in _BACKENDS:
        raise ValueError(f"focal backend must be one of {_BACKENDS}, got {name!r}")
    _state["backend"] = name


def get_backend() -> str:
    """The selected backend name (environment default ``"eager"``)."""
    if _state["backend"] is None:
        set_backend(os.environ.get("RETINA_FOCAL_BACKEND", "eager"))
    return _state["backend"]


def kernel(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` wrapped so that each call runs eagerly or compiled, per the backend."""

    def run(x: torch.Tensor, *args: Any) -> Any:
        backend = get_backend()
        if backend == "eager" or _state["broken"] or torch.compiler.is_compiling():
            return fn(x, *args)
        if backend == "auto" and x.numel() < AUTO_MIN_NUMEL:
            return fn(x, *args)
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
            return fn(x, *args)

    return run


def _compiled_version(fn: Callable[..., Any]) -> Callable[..., Any]:
    if fn not in _compiled:
        _compiled[fn] = torch.compile(fn, dynamic=True, fullgraph=True)
    return _compiled[fn]

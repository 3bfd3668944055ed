"""The fused float32 CPU focal-loss kernels of ``csrc/focal_cpu.c``, built on first use.

The C source is compiled once per machine with the system C compiler (``$CC``, else ``cc``;
about 3 s) with ``-march=native`` (about 5x faster than baseline x86-64 code) into
``$RETINA_CACHE_DIR`` (default ``~/.cache/retina``) and loaded with :mod:`ctypes`. The file
name is a hash of everything the machine code depends on (:func:`build_key`): the source,
the compiler's version, the flags, and the target options ``-march=native`` expands to on
this machine (:func:`cpu_features`). A cache shared by nodes of different CPU generations
(a common ``$HOME``) thus holds one library per CPU kind, and a library built for other
CPU features is never loaded (it would die with SIGILL). When the features cannot be
determined the build drops ``-march=native`` (portable code). The folder keeps the
:data:`CACHE_KEEP` most recently used libraries; a new build deletes older ones. Concurrent
first uses (DDP ranks, data-loader workers) each build into a private temporary file and
rename it into place, so a half-written library is never loaded.

Each kernel is one pass over memory: the forward reads the logits and targets (or labels)
and writes only per-row float64 partial sums (or the elementwise loss); the backward reads
the same inputs and writes the gradient. Rows are split over ``torch.get_num_threads()``
threads. Partial sums are reduced by the caller in float64, so results do not depend on
the thread count.

:func:`available` says whether the library could be built; when it cannot (no compiler,
a failed build) it warns once and :mod:`retina.ops.focal_backend` uses the eager ATen
kernels instead.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("csrc") / "focal_cpu.c"
FLAGS = (
    "-O3",
    "-march=native",
    "-fopenmp-simd",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fPIC",
    "-shared",
    "-pthread",
)
LIBRARY_PREFIX = "focal_cpu-"
CACHE_KEEP = 4  # libraries kept in the cache folder (the most recently used)
DENSE_BLOCK = 4096  # must equal DENSE_BLOCK in focal_cpu.c
_MIN_PARALLEL_NUMEL = 1 << 15

_lock = threading.Lock()
_state: dict[str, Any] = {"lib": None, "tried": False, "error": None}

_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_F = ctypes.c_float
_INT = ctypes.c_int
_SIGNATURES = {
    "retina_focal_dense_fwd": (_P, _P, _I64, _F, _INT, _F, _P, _P, _INT),
    "retina_focal_dense_bwd": (_P, _P, _I64, _F, _INT, _F, _P, _F, _P, _INT),
    "retina_focal_labels_fwd": (_P, _P, _I64, _I64, _F, _INT, _F, _P, _P, _INT),
    "retina_focal_labels_bwd": (_P, _P, _I64, _I64, _F, _INT, _F, _P, _F, _P, _INT),
    "retina_focal_labels_fused": (_P, _P, _I64, _I64, _F, _INT, _F, _P, _P, _INT),
}


def cache_dir() -> Path:
    """Where built libraries live: ``$RETINA_CACHE_DIR`` or ``~/.cache/retina``."""
    root = os.environ.get("RETINA_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "retina"


def _compiler() -> str | None:
    cc = os.environ.get("CC", "cc")
    return shutil.which(cc)


def _compiler_id(cc: str) -> str:
    try:
        res = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        return res.stdout.splitlines()[0] if res.stdout else cc
    except (OSError, subprocess.SubprocessError):
        return cc


def cpu_features(cc: str) -> str:
    """The target options ``-march=native`` means on this machine, as the compiler expands
    them (GCC: ``-march=znver3 -mavx2 ... --param l1-cache-size=32``; clang:
    ``-target-cpu X -target-feature +avx2 ...``). Empty when the compiler does not say."""
    try:
        res = subprocess.run(
            [cc, "-march=native", "-###", "-x", "c", "-c", os.devnull, "-o", os.devnull],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return march_expansion(res.stderr) if res.returncode == 0 else ""


def march_expansion(driver_output: str) -> str:
    """The target options of the compiler-proper commands in ``cc -###`` output, one string
    with single spaces; empty unless they name a CPU (``-march=`` or ``-target-cpu``).

    A compiler-proper command is a line whose program is ``cc1``/``cc1plus`` (GCC) or whose
    first argument is ``-cc1`` (clang). Other lines (the assembler's, which names a random
    temporary file such as ``/tmp/cc1aB2cD.s``; the linker's; ``COLLECT_GCC_OPTIONS``) are
    ignored, so the result depends only on what the compiler will generate code for.
    """
    opts = [_target_options(tokens) for tokens in map(_split, driver_output.splitlines())
            if _is_compiler_proper(tokens)]  # fmt: skip
    joined = " ".join(o for o in opts if o)
    return joined if "-march=" in joined or "-target-cpu " in joined else ""


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:
        return []


def _is_compiler_proper(tokens: list[str]) -> bool:
    """Whether a ``-###`` command runs the compiler proper (GCC's cc1, clang's -cc1)."""
    if not tokens:
        return False
    gcc = os.path.basename(tokens[0]) in ("cc1", "cc1plus")
    return gcc or (len(tokens) > 1 and tokens[1] == "-cc1")


def _target_options(tokens: list[str]) -> str:
    """The ``-m...``, ``--param X``, ``-target-cpu X`` and ``-target-feature X`` options of a
    compiler-proper command, single-spaced (empty when it has none)."""
    paired = ("-target-cpu", "-target-feature", "--param")
    kept = [
        f"{tok} {nxt}" if tok in paired else tok
        for tok, nxt in zip(tokens, [*tokens[1:], ""], strict=True)
        if tok.startswith("-m") or tok in paired
    ]
    return " ".join(" ".join(kept).split())


def build_flags(features: str) -> tuple[str, ...]:
    """:data:`FLAGS`, without ``-march=native`` when the CPU features are unknown."""
    return FLAGS if features else tuple(f for f in FLAGS if f != "-march=native")


def build_key(source: bytes, compiler: str, flags: tuple[str, ...], features: str) -> str:
    """The cache key: a hash of everything the compiled machine code depends on (the source,
    the compiler's version line, the flags, the machine type and the ``-march=native``
    expansion), each part with its whitespace normalised."""
    key = hashlib.sha256(source)
    for part in (compiler, " ".join(flags), platform.machine(), features):
        key.update(b"\0" + " ".join(part.split()).encode())
    return key.hexdigest()[:16]


def library_path(cc: str) -> Path:
    """The cached library for this source, compiler, flags and CPU."""
    features = cpu_features(cc)
    key = build_key(SOURCE.read_bytes(), _compiler_id(cc), build_flags(features), features)
    return cache_dir() / f"{LIBRARY_PREFIX}{key}.so"


def build(cc: str) -> Path:
    """Compile the library if it is not cached; returns its path. Raises ``RuntimeError``.

    A cache hit marks the library as used (its modification time); a new build then keeps
    only the :data:`CACHE_KEEP` most recently used libraries (:func:`prune_cache`).
    """
    target = library_path(cc)
    if target.exists():
        _touch(target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".building-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        flags = build_flags(cpu_features(cc))
        cmd = [cc, *flags, "-o", tmp, str(SOURCE)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            first = (res.stderr.strip().splitlines() or ["(no output)"])[0]
            raise RuntimeError(f"{' '.join(cmd)} failed: {first}")
        os.replace(tmp, target)
    except (OSError, subprocess.SubprocessError) as err:
        raise RuntimeError(f"cannot build {SOURCE.name} with {cc}: {err}") from err
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    prune_cache(target.parent, keep=CACHE_KEEP)
    return target


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:  # a read-only shared cache: the library is still usable
        pass


def prune_cache(folder: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` most recently used ``focal_cpu-*.so`` libraries in
    ``folder`` (libraries of older sources, compilers or CPUs); returns what was deleted.

    ``keep`` > 1 lets nodes of a few CPU kinds share one cache without rebuilding in turn.
    A process that already loaded a deleted library keeps its mapping."""
    libs = []
    for path in folder.glob(f"{LIBRARY_PREFIX}*.so"):
        try:
            libs.append((path.stat().st_mtime_ns, path))
        except OSError:  # deleted meanwhile by another process
            continue
    libs.sort(reverse=True)
    removed = []
    for _, path in libs[keep:]:
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            continue
    return removed


def _load() -> ctypes.CDLL | None:
    with _lock:
        if _state["tried"]:
            return _state["lib"]
        _state["tried"] = True
        try:
            cc = _compiler()
            if cc is None:
                wanted = os.environ.get("CC", "cc")
                raise RuntimeError(f"no C compiler found (looked for {wanted!r})")
            lib = ctypes.CDLL(str(build(cc)))
            for name, args in _SIGNATURES.items():
                fn = getattr(lib, name)
                fn.argtypes = args
                fn.restype = None
            _state["lib"] = lib
        except (RuntimeError, OSError, AttributeError) as err:
            _state["error"] = str(err)
            warnings.warn(
                f"fused CPU focal-loss kernels unavailable ({err}); using eager kernels",
                RuntimeWarning,
                stacklevel=3,
            )
        return _state["lib"]


def available() -> bool:
    """Whether the native library is built and loaded (builds it on the first call)."""
    return _load() is not None


def supports(x: Tensor) -> bool:
    """Whether ``x`` can run natively: a float32 CPU tensor, and the library loads."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and available()


def _threads(numel: int) -> int:
    return 1 if numel < _MIN_PARALLEL_NUMEL else max(1, torch.get_num_threads())


def _alpha(alpha: float | None) -> tuple[float, int]:
    return (0.0, 0) if alpha is None else (float(alpha), 1)


def _inputs(
    x: Tensor, other: Tensor, dtype: torch.dtype, alpha: float | None, gamma: float
) -> tuple[ctypes.CDLL, Tensor, Tensor, float, int, float]:
    """(library, contiguous x, contiguous ``other`` in ``dtype``, alpha, has_alpha, gamma)."""
    a, has_a = _alpha(alpha)
    return _load(), x.contiguous(), other.to(dtype).contiguous(), a, has_a, float(gamma)


def _grad_args(grad: Tensor, like: Tensor) -> tuple[Tensor | None, float]:
    """(elementwise float32 grad or None, scalar grad)."""
    if grad.dim() == 0:
        return None, float(grad)
    return grad.to(torch.float32).expand_as(like).contiguous(), 0.0


def dense_forward(
    x: Tensor, t: Tensor, alpha: float | None, gamma: float, reduce_sum: bool
) -> Tensor:
    """FL(x, t) elementwise (float32, x's shape), or its float64 0-d sum when ``reduce_sum``."""
    lib, x, t, a, has_a, gamma = _inputs(x, t, torch.float32, alpha, gamma)
    n = x.numel()
    out = None if reduce_sum else torch.empty_like(x)
    partial = torch.empty((n + DENSE_BLOCK - 1) // DENSE_BLOCK, dtype=torch.float64)
    lib.retina_focal_dense_fwd(
        x.data_ptr(), t.data_ptr(), n, a, has_a, gamma,
        None if out is None else out.data_ptr(), partial.data_ptr(), _threads(n),
    )  # fmt: skip
    return partial.sum() if reduce_sum else out


def dense_backward(x: Tensor, t: Tensor, alpha: float | None, gamma: float, grad: Tensor) -> Tensor:
    """dFL/dx * grad (float32, x's shape); ``grad`` 0-d or broadcastable to x."""
    lib, x, t, a, has_a, gamma = _inputs(x, t, torch.float32, alpha, gamma)
    n = x.numel()
    g, gs = _grad_args(grad, x)
    out = torch.empty_like(x)
    lib.retina_focal_dense_bwd(
        x.data_ptr(), t.data_ptr(), n, a, has_a, gamma,
        None if g is None else g.data_ptr(), gs, out.data_ptr(), _threads(n),
    )  # fmt: skip
    return out


def labels_forward(
    x: Tensor, labels: Tensor, alpha: float | None, gamma: float, reduce_sum: bool
) -> Tensor:
    """Focal loss of x (N, K) against labels (N,): (N, K) float32, or a float64 0-d sum."""
    lib, x, labels, a, has_a, gamma = _inputs(x, labels, torch.int64, alpha, gamma)
    n, k = x.shape
    out = None if reduce_sum else torch.empty_like(x)
    partial = torch.empty(n, dtype=torch.float64)
    lib.retina_focal_labels_fwd(
        x.data_ptr(), labels.data_ptr(), n, k, a, has_a, gamma,
        None if out is None else out.data_ptr(), partial.data_ptr(), _threads(x.numel()),
    )  # fmt: skip
    return partial.sum() if reduce_sum else out


def labels_backward(
    x: Tensor, labels: Tensor, alpha: float | None, gamma: float, grad: Tensor
) -> Tensor:
    """dFL/dx * grad for x (N, K) and labels (N,); ``grad`` 0-d or (N, K)."""
    lib, x, labels, a, has_a, gamma = _inputs(x, labels, torch.int64, alpha, gamma)
    n, k = x.shape
    g, gs = _grad_args(grad, x)
    out = torch.empty_like(x)
    lib.retina_focal_labels_bwd(
        x.data_ptr(), labels.data_ptr(), n, k, a, has_a, gamma,
        None if g is None else g.data_ptr(), gs, out.data_ptr(), _threads(x.numel()),
    )  # fmt: skip
    return out


def labels_forward_backward(
    x: Tensor, labels: Tensor, alpha: float | None, gamma: float
) -> tuple[Tensor, Tensor]:
    """(float64 0-d sum of the loss, dFL/dx (N, K) float32) in one pass over x (N, K)."""
    lib, x, labels, a, has_a, gamma = _inputs(x, labels, torch.int64, alpha, gamma)
    n, k = x.shape
    grad = torch.empty_like(x)
    partial = torch.empty(n, dtype=torch.float64)
    lib.retina_focal_labels_fused(
        x.data_ptr(), labels.data_ptr(), n, k, a, has_a, gamma,
        grad.data_ptr(), partial.data_ptr(), _threads(x.numel()),
    )  # fmt: skip
    return partial.sum(), grad

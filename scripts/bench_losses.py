"""Benchmark the fused focal losses against torchvision.ops.sigmoid_focal_loss.

Forward+backward (reduction "sum") of ``sigmoid_focal_loss`` (dense 0/1 targets) and
``sigmoid_focal_loss_from_labels`` (integer labels; torchvision's baseline builds the one-hot
target and drops ignored rows, as torchvision's RetinaNet does), side by side in one process.

CPU: 98,208 x 80 float32 logits (2 images at 512x512, P3-P7, 9 anchors, COCO classes).
CUDA (only when available): 16 images at 800x1333 padded to 896x1408, i.e. 3,781,008 anchors.

Peak extra memory: on CUDA ``torch.cuda.max_memory_allocated`` above the inputs; on CPU the
process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``) above its
resident set before the call, in a child process started with ``MALLOC_MMAP_THRESHOLD_=65536``
so that every freed tensor really leaves the process.

First call: the first forward+backward of each case in this process; for the compile
backend it includes loading Inductor (for the first case) and compiling the forward and
backward kernels, i.e. the first call's compile time. For the native backend the C library
is built beforehand into an empty cache folder and that cold build time is reported
(``native_build_s``); later processes load it from the cache.

Backends: ``native`` (the default ``auto``: fused C kernels on CPU, Triton kernels on CUDA),
``eager`` (ATen ops), ``compile`` (``torch.compile``).

On CUDA the achieved bandwidth (the minimum bytes each case must move, over its time) is
reported beside the device-to-device copy bandwidth measured in the same process
(``copy_GBps``: bytes read plus written by a large ``Tensor.copy_``), the practical limit.

Usage: python scripts/bench_losses.py [--out bench_results/losses.json] [--repeats 5]
       [--backends native,eager,compile] [--devices cpu,cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torchvision.ops import sigmoid_focal_loss as tv_sigmoid_focal_loss

from retina.errors import ResultsError
from retina.ops import (
    focal_backend,
    focal_native,
    sigmoid_focal_loss,
    sigmoid_focal_loss_from_labels,
)
from retina.utils.io import require_output_file, write_json_atomic

CPU_SHAPE = (98_208, 80)
CUDA_ANCHORS = 16 * 9 * sum((896 // s) * (1408 // s) for s in (8, 16, 32, 64, 128))


def make_inputs(n: int, k: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits near the prior (p ~ 0.01), ~0.3% positives, ~2% ignored anchors."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(n, k, generator=g) - 4.6).to(device)
    labels = torch.full((n,), -1, dtype=torch.int64)
    kind = torch.rand(n, generator=g)
    labels[kind < 0.003] = torch.randint(0, k, (int((kind < 0.003).sum()),), generator=g)
    labels[kind > 0.98] = -2
    labels = labels.to(device)
    targets = torch.zeros(n, k, device=device)
    pos = labels >= 0
    targets[pos, labels[pos]] = 1.0
    return x, targets, labels


def cases(x, targets, labels):
    """name -> closure running forward+backward on a fresh leaf copy of the logits."""

    def tv_dense(xr):
        tv_sigmoid_focal_loss(xr, targets, reduction="sum").backward()

    def ours_dense(xr):
        sigmoid_focal_loss(xr, targets, reduction="sum").backward()

    def tv_labels(xr):
        onehot = torch.zeros_like(xr)
        pos = labels >= 0
        onehot[pos, labels[pos]] = 1.0
        keep = labels >= -1
        tv_sigmoid_focal_loss(xr[keep], onehot[keep], reduction="sum").backward()

    def ours_labels(xr):
        sigmoid_focal_loss_from_labels(xr, labels, reduction="sum").backward()

    def ours_labels_fused(xr):
        loss = sigmoid_focal_loss_from_labels(xr, labels, reduction="sum", fused_backward=True)
        loss.backward()

    return {
        "torchvision dense": tv_dense,
        "sigmoid_focal_loss": ours_dense,
        "torchvision one-hot": tv_labels,
        "from_labels": ours_labels,
        "from_labels fused_backward": ours_labels_fused,
    }


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_cases(fns, x, device: str, repeats: int) -> dict[str, dict[str, float]]:
    """First-call time, then interleaved repeats (median seconds)."""
    xr = x.clone().requires_grad_()
    out: dict[str, dict[str, float]] = {}
    for name, fn in fns.items():
        _sync(device)
        t0 = time.perf_counter()
        fn(xr)
        _sync(device)
        out[name] = {"first_call_s": time.perf_counter() - t0}
        xr.grad = None
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn(xr)
            _sync(device)
            samples[name].append(time.perf_counter() - t0)
            xr.grad = None
    for name in fns:
        out[name]["median_s"] = statistics.median(samples[name])
    return out


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def cpu_peak_child(name: str, backend: str) -> None:
    """Child process: print the peak extra resident bytes of one case (after a warm-up)."""
    torch.set_num_threads(2)
    focal_backend.set_backend(backend)
    x, targets, labels = make_inputs(*CPU_SHAPE, "cpu")
    fn = cases(x, targets, labels)[name]
    xr = x.clone().requires_grad_()
    fn(xr)
    xr.grad = None
    base = _status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    fn(xr)
    print(_status_bytes("VmHWM") - base)


def cpu_peak(name: str, backend: str) -> int | None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [sys.executable, __file__, "--peak-child", name, "--backend", backend]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = res.stdout.strip().splitlines()
    return int(lines[-1]) if res.returncode == 0 and lines else None


def cuda_peak(fn, x) -> int:
    xr = x.clone().requires_grad_()
    fn(xr)
    xr.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn(xr)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def cold_native_build() -> float | None:
    """Seconds to build the native library into an empty cache (None without a compiler)."""
    cc = focal_native._compiler()
    if cc is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        before = os.environ.get("RETINA_CACHE_DIR")
        os.environ["RETINA_CACHE_DIR"] = tmp
        try:
            t0 = time.perf_counter()
            focal_native.build(cc)
            return time.perf_counter() - t0
        finally:
            if before is None:
                del os.environ["RETINA_CACHE_DIR"]
            else:
                os.environ["RETINA_CACHE_DIR"] = before


def copy_bandwidth(device: str, numel: int = 1 << 28, repeats: int = 10) -> float:
    """GB/s of a device-to-device float32 copy, counting bytes read and written."""
    src = torch.empty(numel, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    _sync(device)
    return 2 * src.numel() * 4 * repeats / (time.perf_counter() - t0) / 1e9


def run_device(device: str, backend: str, repeats: int) -> dict:
    focal_backend.set_backend(backend)
    n, k = CPU_SHAPE if device == "cpu" else (CUDA_ANCHORS, 80)
    x, targets, labels = make_inputs(n, k, device)
    fns = cases(x, targets, labels)
    timings = time_cases(fns, x, device, repeats)
    for name, fn in fns.items():
        peak = cpu_peak(name, backend) if device == "cpu" else cuda_peak(fn, x)
        timings[name]["peak_extra_mib"] = None if peak is None else peak / 2**20
    # Minimum float32 traffic of forward+backward: dense reads logits and targets twice and
    # writes the gradient (20 B/element); from_labels reads logits twice, writes it (12 B);
    # fused_backward reads the logits once and writes the gradient (8 B).
    for name, per_elem in (
        ("sigmoid_focal_loss", 20),
        ("from_labels", 12),
        ("from_labels fused_backward", 8),
    ):
        moved = x.numel() * per_elem
        timings[name]["achieved_GBps"] = moved / timings[name]["median_s"] / 1e9
    return {"device": device, "backend": backend, "shape": [n, k], "cases": timings}


def table(results: list[dict]) -> str:
    rows = [
        "| device | backend | loss | time (ms) | vs torchvision | peak extra (MiB) | "
        "vs torchvision | first call incl. compile (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        c = res["cases"]
        for ours, base in (
            ("sigmoid_focal_loss", "torchvision dense"),
            ("from_labels", "torchvision one-hot"),
            ("from_labels fused_backward", "torchvision one-hot"),
        ):
            for name in (base, ours) if ours != "from_labels fused_backward" else (ours,):
                r = c[name]
                speed = c[base]["median_s"] / r["median_s"]
                mem = r["peak_extra_mib"]
                base_mem = c[base]["peak_extra_mib"]
                mem_s = "n/a" if mem is None else f"{mem:.0f}"
                ratio = "n/a" if mem is None or not base_mem else f"{mem / base_mem:.2f}"
                rows.append(
                    f"| {res['device']} | {res['backend']} | {name} | {r['median_s'] * 1e3:.0f} "
                    f"| {speed:.2f}x | {mem_s} | {ratio} | {r['first_call_s']:.1f} |"
                )
    return "\n".join(rows)


def bandwidth_table(results: list[dict], copy_gbps: float) -> str:
    """Achieved GB/s of our CUDA cases against the copy bandwidth."""
    rows = ["| backend | loss | achieved GB/s | copy GB/s / achieved |", "|---|---|---|---|"]
    for res in results:
        if res["device"] != "cuda":
            continue
        for name, r in res["cases"].items():
            if "achieved_GBps" in r:
                gbps = r["achieved_GBps"]
                rows.append(f"| {res['backend']} | {name} | {gbps:.0f} | {copy_gbps / gbps:.2f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results/losses.json"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", default="native,eager")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--devices", default=None, help="cpu,cuda (default: cpu, and cuda when available)"
    )
    parser.add_argument("--peak-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="eager", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_child:
        cpu_peak_child(args.peak_child, args.backend)
        return
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    try:
        require_output_file(args.out, "--out")
    except ResultsError as exc:
        raise SystemExit(f"bench_losses: error: {exc}") from None
    torch.set_num_threads(args.threads)
    results = []
    meta = {"torch": torch.__version__, "threads": args.threads, "repeats": args.repeats}
    backends = args.backends.split(",")
    for backend in backends:
        if backend not in ("native", "eager", "compile"):
            parser.error(f"--backends: unknown backend {backend!r} (native, eager, compile)")
    default_devices = "cpu,cuda" if torch.cuda.is_available() else "cpu"
    devices = (args.devices or default_devices).split(",")
    for device in devices:
        if device not in ("cpu", "cuda"):
            parser.error(f"--devices: unknown device {device!r} (cpu, cuda)")
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("--devices cuda: no CUDA device is available")
    if "native" in backends and "cpu" in devices:
        meta["native_build_s"] = cold_native_build()
    if "cuda" in devices:
        meta["cuda_device"] = torch.cuda.get_device_name()
        meta["copy_GBps"] = copy_bandwidth("cuda")
    for backend in backends:
        for device in devices:
            results.append(run_device(device, backend, args.repeats))
    write_json_atomic(args.out, {"meta": meta, "results": results}, indent=2)
    print(table(results))
    if "native_build_s" in meta:
        print(f"\nnative: cold build of the C library {meta['native_build_s']:.1f} s")
    if "copy_GBps" in meta:
        print(f"\n{meta['cuda_device']}: device-to-device copy {meta['copy_GBps']:.0f} GB/s")
        print(bandwidth_table(results, meta["copy_GBps"]))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

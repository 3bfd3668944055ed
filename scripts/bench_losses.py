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

First call: the first forward+backward of each case in this process (for ``triton``, it
includes compiling the kernels unless Triton's on-disk cache has them).

Backends: ``triton`` (the Triton kernels; on CUDA only, CPU tensors run eager) and ``eager``
(ATen ops), the ``backend`` argument of the loss functions.

On CUDA the achieved bandwidth (the minimum bytes each case must move, over its time) is
reported beside the device-to-device copy bandwidth measured in the same process
(``copy_GBps``: bytes read plus written by a large ``Tensor.copy_``), the practical limit.

``--train-step tiny,r50`` instead times what each backend buys in a full CPU training step
(forward, loss, backward, SGD step) of a model built from its config: ``tiny`` is the demo
(``retinanet_tiny``, 3 classes, batch 8 at 256x256), ``r50`` is ``retinanet_r50_fpn``
(random weights, 80 classes, batch 2 at 512x512). One process; every repetition runs each
backend once, in alternating order, on the same batch, after one untimed step per backend.
Backends: ``eager`` and ``reference``, the readable autograd formulas of
:mod:`retina.ops.focal_reference`. Reports per backend the median CPU seconds of this
process per step (``time.process_time``: with ``--threads 1`` it barely moves when other
processes load a shared machine, unlike the wall time, also reported with its range) and the
ratio to ``reference`` and to ``eager`` as the median of per-repetition ratios of CPU times.
(The table in docs/losses.md also has the deleted ``native`` and ``compile`` backends: this
script run on the retina package of commit b1a231a.)

Usage: python scripts/bench_losses.py [--out bench_results/losses.json] [--repeats 5]
       [--backends triton,eager] [--devices cpu,cuda]
       python scripts/bench_losses.py --train-step tiny,r50 --threads 1 --repeats 7
       [--backends reference,eager]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torchvision.ops import sigmoid_focal_loss as tv_sigmoid_focal_loss

from retina.errors import ResultsError
from retina.modeling.losses import FocalLoss
from retina.ops import sigmoid_focal_loss, sigmoid_focal_loss_from_labels
from retina.ops.focal_reference import sigmoid_focal_loss_from_labels_reference
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


def cases(x, targets, labels, backend):
    """name -> closure running forward+backward on a fresh leaf copy of the logits."""

    def tv_dense(xr):
        tv_sigmoid_focal_loss(xr, targets, reduction="sum").backward()

    def ours_dense(xr):
        sigmoid_focal_loss(xr, targets, reduction="sum", backend=backend).backward()

    def tv_labels(xr):
        onehot = torch.zeros_like(xr)
        pos = labels >= 0
        onehot[pos, labels[pos]] = 1.0
        keep = labels >= -1
        tv_sigmoid_focal_loss(xr[keep], onehot[keep], reduction="sum").backward()

    def ours_labels(xr):
        sigmoid_focal_loss_from_labels(xr, labels, reduction="sum", backend=backend).backward()

    return {
        "torchvision dense": tv_dense,
        "sigmoid_focal_loss": ours_dense,
        "torchvision one-hot": tv_labels,
        "from_labels": ours_labels,
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
    x, targets, labels = make_inputs(*CPU_SHAPE, "cpu")
    fn = cases(x, targets, labels, backend)[name]
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
    n, k = CPU_SHAPE if device == "cpu" else (CUDA_ANCHORS, 80)
    x, targets, labels = make_inputs(n, k, device)
    fns = cases(x, targets, labels, backend)
    timings = time_cases(fns, x, device, repeats)
    for name, fn in fns.items():
        peak = cpu_peak(name, backend) if device == "cpu" else cuda_peak(fn, x)
        timings[name]["peak_extra_mib"] = None if peak is None else peak / 2**20
    # Minimum float32 traffic of forward+backward: dense reads logits and targets twice and
    # writes the gradient (20 B/element); from_labels reads logits twice, writes it (12 B).
    for name, per_elem in (("sigmoid_focal_loss", 20), ("from_labels", 12)):
        moved = x.numel() * per_elem
        timings[name]["achieved_GBps"] = moved / timings[name]["median_s"] / 1e9
    return {"device": device, "backend": backend, "shape": [n, k], "cases": timings}


def _header(*columns: str) -> list[str]:
    """The title and rule lines of a markdown table with these columns."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def table(results: list[dict]) -> str:
    rows = _header("device", "backend", "loss", "time (ms)", "vs torchvision",
                   "peak extra (MiB)", "vs torchvision", "first call (s)")
    for res in results:
        c = res["cases"]
        for ours, base in (
            ("sigmoid_focal_loss", "torchvision dense"),
            ("from_labels", "torchvision one-hot"),
        ):
            for name in (base, ours):
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
    rows = _header("backend", "loss", "achieved GB/s", "copy GB/s / achieved")
    for res in results:
        if res["device"] != "cuda":
            continue
        for name, r in res["cases"].items():
            if "achieved_GBps" in r:
                gbps = r["achieved_GBps"]
                rows.append(f"| {res['backend']} | {name} | {gbps:.0f} | {copy_gbps / gbps:.2f} |")
    return "\n".join(rows)


# model config, image size, batch, classes
STEP_MODELS = {
    "tiny": ("retinanet_tiny", 256, 8, 3),
    "r50": ("retinanet_r50_fpn", 512, 2, 80),
}
MODEL_CONFIGS = Path(__file__).resolve().parents[1] / "retina" / "configs" / "model"


class ReferenceFocalLoss:
    """The model's focal loss (gamma 2, alpha 0.25) from the readable reference formulas."""

    backend = "reference"

    def __call__(self, logits, labels, num_images, *, anchors=None, per_image=False):
        loss = sigmoid_focal_loss_from_labels_reference(logits, labels, 0.25, 2.0, "none")
        return loss.reshape(num_images, -1).sum(dim=1) if per_image else loss.sum()


def train_step_bench(model_name: str, backends: list[str], repeats: int) -> dict:
    """Median seconds of one training step of ``model_name`` per focal-loss backend."""
    from bench_model import make_batch  # scripts/ is on sys.path when run as a script
    from omegaconf import OmegaConf

    from retina.utils.instantiate import instantiate_node

    config, size, batch, classes = STEP_MODELS[model_name]
    node = OmegaConf.load(MODEL_CONFIGS / f"{config}.yaml")
    del node["defaults"]  # the model's choices; the part constructors default the rest
    node.weights = None  # random weights: the step time does not depend on them
    torch.manual_seed(0)
    losses = {b: ReferenceFocalLoss() if b == "reference" else FocalLoss(backend=b)
              for b in backends}  # fmt: skip
    model = instantiate_node(node, "model", num_classes=classes, cls_loss=losses[backends[0]])
    images, targets = make_batch(batch, size, size, classes, torch.device("cpu"))
    opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=1e-5)
    model.train()

    def step(backend: str) -> tuple[float, float]:
        """(wall seconds, this process's CPU seconds) of one training step."""
        model.cls_loss = losses[backend]
        wall, cpu = time.perf_counter(), time.process_time()
        loss = sum(model(images, targets).losses.values())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - wall, time.process_time() - cpu

    first = {b: step(b)[0] for b in backends}
    wall: dict[str, list[float]] = {b: [] for b in backends}
    cpu: dict[str, list[float]] = {b: [] for b in backends}
    for i in range(repeats):
        for b in backends if i % 2 == 0 else backends[::-1]:
            w, c = step(b)
            wall[b].append(w)
            cpu[b].append(c)
    return {
        "model": model_name, "config": config, "size": size, "batch": batch,
        "num_classes": classes, "first_step_s": first, "wall_s": wall, "cpu_s": cpu,
    }  # fmt: skip


def paired_ratio(res: dict, base: str, backend: str) -> float:
    """Median over repetitions of base CPU time / backend CPU time (the two steps of one
    repetition run back to back, so a slow phase of the machine hits both)."""
    pairs = zip(res["cpu_s"][base], res["cpu_s"][backend], strict=True)
    return statistics.median(b / t for b, t in pairs)


def step_table(results: list[dict]) -> str:
    """Markdown: CPU and wall seconds per step (medians) and paired ratios per backend."""
    rows = _header("model", "backend", "CPU s/step (median)", "wall s/step (median, range)",
                   "reference / backend", "eager / backend", "first step (s)")
    for res in results:
        for b, cpu in res["cpu_s"].items():
            wall = res["wall_s"][b]
            ratios = [
                f"{paired_ratio(res, base, b):.3f}" if base in res["cpu_s"] else "n/a"
                for base in ("reference", "eager")
            ]
            rows.append(
                f"| {res['model']} ({res['batch']}x{res['size']}px, {res['num_classes']} cls) "
                f"| {b} | {statistics.median(cpu):.3f} | {statistics.median(wall):.3f} "
                f"({min(wall):.2f}-{max(wall):.2f}) | {' | '.join(ratios)} "
                f"| {res['first_step_s'][b]:.1f} |"
            )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results/losses.json"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", default=None, help="default: triton,eager on CUDA, "
                        "eager on CPU; --train-step: reference,eager")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--devices", default=None, help="cpu,cuda (default: cpu, and cuda when available)"
    )
    parser.add_argument(
        "--train-step", default=None,
        help="time full CPU training steps of these models instead (tiny,r50)",
    )  # fmt: skip
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
    if args.train_step:
        train_steps(parser, args)
        return
    results = []
    meta = {"torch": torch.__version__, "threads": args.threads, "repeats": args.repeats}
    backends = (args.backends or "triton,eager").split(",")
    for backend in backends:
        if backend not in ("triton", "eager"):
            parser.error(f"--backends: unknown backend {backend!r} (triton, eager)")
    default_devices = "cpu,cuda" if torch.cuda.is_available() else "cpu"
    devices = (args.devices or default_devices).split(",")
    for device in devices:
        if device not in ("cpu", "cuda"):
            parser.error(f"--devices: unknown device {device!r} (cpu, cuda)")
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("--devices cuda: no CUDA device is available")
    if "cuda" in devices:
        meta["cuda_device"] = torch.cuda.get_device_name()
        meta["copy_GBps"] = copy_bandwidth("cuda")
    for backend in backends:
        for device in devices:
            if device == "cuda" or backend == "eager":  # triton on CPU tensors is eager
                results.append(run_device(device, backend, args.repeats))
    write_json_atomic(args.out, {"meta": meta, "results": results}, indent=2)
    print(table(results))
    if "copy_GBps" in meta:
        print(f"\n{meta['cuda_device']}: device-to-device copy {meta['copy_GBps']:.0f} GB/s")
        print(bandwidth_table(results, meta["copy_GBps"]))
    print(f"\nwrote {args.out}")


def train_steps(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    backends = (args.backends or "reference,eager").split(",")
    models = args.train_step.split(",")
    for backend in backends:
        if backend not in ("reference", "eager"):
            parser.error(f"--backends: unknown backend {backend!r} (reference, eager)")
    for name in models:
        if name not in STEP_MODELS:
            parser.error(f"--train-step: unknown model {name!r} ({', '.join(STEP_MODELS)})")
    meta = {"torch": torch.__version__, "threads": args.threads, "repeats": args.repeats}
    results = []
    for name in models:
        results.append(train_step_bench(name, backends, args.repeats))
        print(step_table(results[-1:]), flush=True)
    write_json_atomic(args.out, {"meta": meta, "train_step": results}, indent=2)
    print(step_table(results))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

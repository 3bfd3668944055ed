#!/usr/bin/env python
"""Side-by-side benchmark: torchvision's RetinaNet vs ours with the same weights.

One process, one torchvision ResNet-50-FPN RetinaNet (v1, frozen BN, stem + layer1 frozen:
torchvision's pretrained-training setup, random weights), converted with
``from_torchvision``; measurements alternate between the two models so machine noise hits
both alike. Reported as medians and ratios (torchvision / ours: > 1 means ours is faster).

    python scripts/bench_model.py                          # CPU: batch 2 at 512x512, fp32
    python scripts/bench_model.py --device cuda            # batch 16 at 800x1333, bf16 AMP

Measured:
- train_step: forward, loss, backward and an SGD step on one batch;
- loss_assign: anchors + matching + losses (forward and backward) on fixed head outputs;
- inference: eval forward of the whole model;
- postprocess: head outputs -> final detections;
- peak memory of a training step and of inference (CUDA: allocator peak; CPU: peak RSS
  growth, sampled every 2 ms).

The classification bias is set to logit(0.05) before conversion so that about half the
scores pass the 0.05 threshold, the top-1000 per level saturates and NMS sees thousands of
boxes per image, as with a trained model (a prior-initialised head would give postprocessing
nothing to do).
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from retina.errors import ResultsError
from retina.utils.io import require_output_file, write_json_atomic, write_text_atomic


def build_pair(num_classes: int, height: int, width: int, device: torch.device, div: int):
    """torchvision RetinaNet (v1) and its ``from_torchvision`` conversion."""
    from torchvision.models import resnet50
    from torchvision.models.detection import RetinaNet as TVRetinaNet
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    from retina.modeling.torchvision import from_torchvision

    torch.manual_seed(0)
    body = resnet50(norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 3, [2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    tv = TVRetinaNet(
        backbone, num_classes, min_size=min(height, width), max_size=max(height, width)
    )
    with torch.no_grad():
        tv.head.classification_head.cls_logits.bias.fill_(math.log(0.05 / 0.95))
    ours = from_torchvision(tv)
    ours.size_divisibility = div
    return tv.to(device), ours.to(device)


def make_batch(batch: int, height: int, width: int, num_classes: int, device: torch.device):
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, height, width, generator=g).to(device) for _ in range(batch)]
    targets = []
    for i in range(batch):
        n = 3 + (5 * i) % 15  # 3..17 boxes, ~COCO's mean of 7
        xy = torch.rand(n, 2, generator=g) * torch.tensor([width * 0.8, height * 0.8])
        wh = 16 + torch.rand(n, 2, generator=g) * torch.tensor([width * 0.4, height * 0.4])
        boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([width, height]))], 1)
        labels = torch.randint(0, num_classes, (n,), generator=g)
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device)})
    return images, targets


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]  # fmt: skip


def _heap_in_use() -> Callable[[], int] | None:
    """glibc's bytes in use (all arenas + mmapped chunks): what tensors hold on CPU."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None

    def in_use() -> int:
        info = libc.mallinfo2()
        return int(info.uordblks + info.hblkhd)

    return in_use


class PeakMemory:
    """Peak memory growth during a block: the CUDA allocator's peak, or on CPU the peak of
    glibc's in-use heap bytes sampled every millisecond (RSS when mallinfo2 is missing;
    RSS under-reports because freed pages are reused)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self._probe = _heap_in_use() or self._rss

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self._probe()
            self._max = self.base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, self._probe())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._max, self._probe()) - self.base


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def bench(tasks: dict[str, Callable[[], object]], reps: int, warmup: int, device) -> dict:
    """Run each task ``warmup + reps`` times, alternating tasks every repetition."""
    times: dict[str, list[float]] = {k: [] for k in tasks}
    for i in range(warmup + reps):
        order = list(tasks) if i % 2 == 0 else list(reversed(tasks))
        for name in order:
            t = timed(tasks[name], device)
            if i >= warmup:
                times[name].append(t)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--num-classes", type=int, default=91)
    p.add_argument("--amp", default=None, choices=["none", "bf16", "fp16"])
    p.add_argument("--channels-last", action="store_true", help="both models channels_last")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the backbone, FPN and heads of both models (what "
                        "train.compile does for ours)")  # fmt: skip
    p.add_argument("--reps", type=int, default=None, help="timed repetitions of the big tasks")
    p.add_argument("--size-divisibility", type=int, default=None,
                   help="our padding multiple (default: 128 on CPU, 32 on CUDA = torchvision's,"
                        " so both see the same number of pixels)")  # fmt: skip
    p.add_argument("--normalizer", default="image", choices=["image", "batch", "ema"],
                   help="our loss normaliser (image = torchvision's, the same loss values)")
    p.add_argument("--only", nargs="+", default=None,
                   choices=["loss_assign", "postprocess", "inference", "train_step", "memory"],
                   help="run only these measurements")
    p.add_argument("--out", type=Path, default=Path("bench_model"), help="writes OUT.json/.md")
    args = p.parse_args(argv)
    try:
        for suffix in (".json", ".md"):
            require_output_file(f"{args.out}{suffix}", "--out")
    except ResultsError as exc:
        raise SystemExit(f"bench_model: error: {exc}") from None
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("--device cuda: no CUDA device available", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    batch = args.batch or (16 if cuda else 2)
    height = args.height or (800 if cuda else 512)
    width = args.width or (1333 if cuda else 512)
    amp = args.amp or ("bf16" if cuda else "none")
    reps = args.reps or (5 if cuda else 2)
    div = args.size_divisibility or (32 if cuda else 128)
    if cuda:
        torch.backends.cudnn.benchmark = True

    tv, ours = build_pair(args.num_classes, height, width, device, div)
    ours.loss_normalizer = args.normalizer
    if args.channels_last:
        tv.to(memory_format=torch.channels_last)
        ours.to(memory_format=torch.channels_last)
    if args.compile:
        for part in (tv.backbone, tv.head, ours.backbone, ours.fpn, ours.head):
            part.compile()
    images, targets = make_batch(batch, height, width, args.num_classes, device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    opts = {
        m: torch.optim.SGD([q for q in m.parameters() if q.requires_grad], lr=1e-5, momentum=0.9)
        for m in (tv, ours)
    }
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def train_step(model):
        def run():
            model.train()
            with autocast():
                out = model(images, targets)  # ours: LossOutput; torchvision: a dict
                loss = sum((out.losses if model is ours else out).values())
            scaler.scale(loss).backward()
            scaler.step(opts[model])
            scaler.update()
            opts[model].zero_grad(set_to_none=True)

        return run

    def infer(model):
        def run():
            model.eval()
            with torch.no_grad(), autocast():
                return model(images)

        return run

    # fixed head outputs for the loss/postprocess measurements
    from torchvision.models.detection.image_list import ImageList

    with torch.no_grad(), autocast():
        x, sizes = ours.preprocess(images)
        feats = ours.fpn(ours.backbone(x))
        logits, deltas = ours.head(feats)
        tv_images, tv_targets = tv.transform(images, targets)
        tv_feats = list(tv.backbone(tv_images.tensors).values())
        tv_head = tv.head(tv_feats)
    # postprocessing runs on float32 head outputs for both models (torchvision's NMS has no
    # bfloat16 kernel)
    logits_f, deltas_f = logits.float(), deltas.float()
    tv_feats_f = [f.float() for f in tv_feats]
    tv_head_f = {k: v.float() for k, v in tv_head.items()}
    grids = [tuple(f.shape[-2:]) for f in feats]
    counts = ours.anchor_generator.num_anchors_per_level(grids)

    def loss_ours():
        lg = logits.detach().requires_grad_()
        dl = deltas.detach().requires_grad_()
        anchors = ours.anchor_generator(grids, device)
        with autocast():
            out = ours.losses(lg, dl, anchors, targets, counts).losses
        sum(out.values()).backward()

    def loss_tv():
        head = {k: v.detach().requires_grad_() for k, v in tv_head.items()}
        anchors = tv.anchor_generator(ImageList(tv_images.tensors, tv_images.image_sizes), tv_feats)
        with autocast():
            out = tv.compute_loss(tv_targets, head, anchors)
        sum(out.values()).backward()

    def post_ours():
        anchors = ours.anchor_generator(grids, device)
        return ours.inference(logits_f, deltas_f, anchors, counts, sizes)

    def post_tv():
        image_list = ImageList(tv_images.tensors.float(), tv_images.image_sizes)
        anchors = tv.anchor_generator(image_list, tv_feats_f)
        hw = [f.shape[-2] * f.shape[-1] for f in tv_feats_f]
        a = tv_head_f["cls_logits"].shape[1] // sum(hw)
        split = [n * a for n in hw]
        heads = {k: list(v.split(split, dim=1)) for k, v in tv_head_f.items()}
        anchors = [list(t.split(split)) for t in anchors]
        dets = tv.postprocess_detections(heads, anchors, tv_images.image_sizes)
        return tv.transform.postprocess(dets, tv_images.image_sizes, [(height, width)] * batch)

    results: dict[str, dict[str, float]] = {}
    print(f"device={args.device} batch={batch} {height}x{width} amp={amp} "
          f"classes={args.num_classes} threads={torch.get_num_threads()}", flush=True)  # fmt: skip
    small = max(15, 2 * reps)  # cheap tasks: more repetitions against machine noise
    plan = [
        ("loss_assign", {"tv": loss_tv, "ours": loss_ours}, small),
        ("postprocess", {"tv": post_tv, "ours": post_ours}, small),
        ("inference", {"tv": infer(tv), "ours": infer(ours)}, reps + 1),
        ("train_step", {"tv": train_step(tv), "ours": train_step(ours)}, reps),
    ]
    for name, tasks, n in plan:
        if args.only and name not in args.only:
            continue
        results[name] = bench(tasks, n, 1, device)
        r = results[name]
        print(f"{name:12s} tv {r['tv']:.4f}s  ours {r['ours']:.4f}s  "
              f"speed-up {r['tv'] / r['ours']:.2f}x", flush=True)  # fmt: skip
    memory = {}
    for name, fn in (("train_step", train_step), ("inference", infer)):
        if args.only and "memory" not in args.only:
            break
        memory[name] = {}
        for key, model in (("tv", tv), ("ours", ours)):
            with PeakMemory(device) as pm:
                fn(model)()
            memory[name][key] = pm.peak / 2**20
        m = memory[name]
        print(f"peak memory {name}: tv {m['tv']:.0f} MiB ours {m['ours']:.0f} MiB", flush=True)

    record = {
        "device": torch.cuda.get_device_name() if cuda else f"cpu ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "batch": batch, "height": height, "width": width, "amp": amp,
        "num_classes": args.num_classes, "channels_last": args.channels_last,
        "compile": args.compile,
        "size_divisibility": div, "threads": torch.get_num_threads(),
        "loss_normalizer": args.normalizer,
        "seconds": results, "peak_memory_mib": memory,
        "speedup": {k: v["tv"] / v["ours"] for k, v in results.items()},
        "images_per_second": {k: batch / v for k, v in results.get("train_step", {}).items()},
    }  # fmt: skip
    write_json_atomic(f"{args.out}.json", record, indent=2)
    write_text_atomic(f"{args.out}.md", markdown(record))
    print(markdown(record))
    return 0


def markdown(r: dict) -> str:
    head = (f"{r['device']}, torch {r['torch']}, batch {r['batch']} at {r['height']}x{r['width']},"
            f" AMP {r['amp']}, {r['num_classes']} classes"
            + (", channels_last" if r.get("channels_last") else "")
            + (", compiled" if r.get("compile") else ""))  # fmt: skip
    lines = [head, "", "| measure | torchvision | ours | torchvision / ours |", "|---|---|---|---|"]
    for k, v in r["seconds"].items():
        lines.append(f"| {k} (s) | {v['tv']:.4f} | {v['ours']:.4f} | {v['tv'] / v['ours']:.2f}x |")
    for k, v in r["peak_memory_mib"].items():
        ratio = v["tv"] / v["ours"] if v["ours"] > 0 else float("nan")
        lines.append(f"| peak memory {k} (MiB) | {v['tv']:.0f} | {v['ours']:.0f} | {ratio:.2f}x |")
    ips = r["images_per_second"]
    if ips:
        lines.append(f"| training images/s | {ips['tv']:.2f} | {ips['ours']:.2f} | "
                     f"{ips['ours'] / ips['tv']:.2f}x (ours / tv) |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

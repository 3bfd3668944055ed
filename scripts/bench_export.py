"""Latency of an exported RetinaNet in onnxruntime against eager PyTorch, batch 1 on the CPU.

    python scripts/bench_export.py [--out bench_results/export] [--threads 1] [--repeats 10]

Two models side by side in one run: the demo's tiny model (configs/model/retinanet_tiny.yaml,
3 classes) at 256x256, and R50-FPN converted from torchvision (91 classes) at 800x1333. Both
have random weights with the classification head re-drawn (std 0.05), so that thousands of
candidates pass the score threshold and NMS does real work; both runtimes get the same
images and the same candidates. Each model is exported with the code retina-export uses and
checked against eager inference first. Writes ``results.json`` and ``results.md``; the times
are medians over ``--repeats`` runs after two warm-up runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch


def plant(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-draw the classification head's weights so that scores spread over (0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.head.named_parameters():
            if "cls" in name and p.dim() == 4:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def demo_model() -> torch.nn.Module:
    import yaml

    from retina.modeling import build_retinanet

    cfg = yaml.safe_load(Path("configs/model/retinanet_tiny.yaml").read_text())
    cfg.pop("_target_")
    torch.manual_seed(0)
    return plant(build_retinanet(num_classes=3, **cfg))


def r50_model() -> torch.nn.Module:
    from torchvision.models.detection import retinanet_resnet50_fpn

    from retina.modeling.torchvision import from_torchvision

    torch.manual_seed(0)
    tv = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    return plant(from_torchvision(tv.eval()))


def median_ms(fn, repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench(name: str, model: torch.nn.Module, size: tuple[int, int], repeats: int,
          threads: int) -> dict:  # fmt: skip
    import onnxruntime

    from retina.export.exporter import build_export, check_parity
    from retina.export.parity import sample_images

    cat_ids = list(range(1, model.num_classes + 1))
    image = torch.stack(sample_images([size], seed=3))
    start = time.perf_counter()
    data, run = build_export(model, cat_ids, "onnx", {"bench": name}, image)
    export_s = time.perf_counter() - start
    check_parity(model, run, cat_ids, [image])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    feed = {"images": image.numpy()}
    with torch.inference_mode():
        detections = int(session.run(None, feed)[3][0])
        eager_ms = median_ms(lambda: model(image / 255.0), repeats)
    onnx_ms = median_ms(lambda: session.run(None, feed), repeats)
    return {
        "model": name, "input": f"1x3x{size[0]}x{size[1]}", "detections": detections,
        "eager_ms": round(eager_ms, 1), "onnxruntime_ms": round(onnx_ms, 1),
        "eager_over_onnxruntime": round(eager_ms / onnx_ms, 2),
        "export_seconds": round(export_s, 1), "onnx_mb": round(len(data) / 2**20, 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench_results/export")
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    import onnxruntime

    torch.set_num_threads(args.threads)
    rows = [
        bench("demo (retinanet_tiny)", demo_model(), (256, 256), args.repeats, args.threads),
        bench("R50-FPN (torchvision)", r50_model(), (800, 1333), args.repeats, args.threads),
    ]
    env = {
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "threads": args.threads, "cpu": platform.processor() or platform.machine(),
        "repeats": args.repeats,
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1) + "\n")
    lines = [
        "| model | input | detections | eager PyTorch (ms) | onnxruntime (ms) | eager / ORT |",
        "|---|---|---|---|---|---|",
        *(f"| {r['model']} | {r['input']} | {r['detections']} | {r['eager_ms']} | "
          f"{r['onnxruntime_ms']} | {r['eager_over_onnxruntime']} |" for r in rows),
        "",
        f"torch {env['torch']}, onnxruntime {env['onnxruntime']}, {args.threads} thread(s), "
        f"median of {args.repeats} after 2 warm-up runs.",
    ]  # fmt: skip
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

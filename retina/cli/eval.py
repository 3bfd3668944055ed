"""``retina-eval``: COCO mAP of a checkpoint on a dataset's val split (thin Hydra entry point).

    retina-eval checkpoint=PATH [data=coco data.root=...] [hydra.run.dir=...]
    python -m retina.cli.eval checkpoint=PATH
    torchrun --nproc_per_node=2 -m retina.cli.eval checkpoint=PATH

The model and its label mapping come from the checkpoint; the dataset from the chosen
``data/`` group, else from the checkpoint's own data config. Under ``torchrun`` every process
runs inference on its share of the images and rank 0 scores the gathered detections.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from retina.cli import exit_on_interrupt

with exit_on_interrupt("retina-eval"):  # Ctrl-C while loading: one line
    import hydra
    from omegaconf import DictConfig, OmegaConf

    from retina.cli.common import exit_on_user_error, required_value, run_cli
    from retina.config import CONFIG_DIR
    from retina.errors import ConfigError

log = logging.getLogger("retina.eval")

EVAL_KEYS = frozenset({"backend", "batch_size", "num_workers", "device", "score_thresh"})


def check_eval_config(cfg: DictConfig) -> None:
    """Known ``eval.*`` keys with valid values (one-line :class:`ConfigError` otherwise)."""
    from retina.engine.evaluation import check_backend

    node = cfg.eval
    for key in node.keys():
        if key not in EVAL_KEYS:
            known = ", ".join(sorted(EVAL_KEYS))
            raise ConfigError(f"eval.{key}", f"unknown key (known: {known})")
    try:
        check_backend(str(node.backend))
    except ValueError as err:
        raise ConfigError("eval.backend", str(err)) from None
    for key, minimum in (("batch_size", 1), ("num_workers", 0)):
        value = node.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"eval.{key}", f"must be an integer >= {minimum}, got {value!r}")
    thresh = node.get("score_thresh")
    if thresh is not None and (
        not isinstance(thresh, (int, float)) or isinstance(thresh, bool) or not 0 <= thresh <= 1
    ):
        raise ConfigError("eval.score_thresh", f"must be null or in [0, 1], got {thresh!r}")


def evaluate_checkpoint(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Everything ``retina-eval`` does; returns the metrics (the same on every rank).

    ``run_dir`` is locked for this process (rank 0) and must not be a training run's folder
    (:func:`retina.engine.rundir.require_eval_dir`; the Hydra callback
    :class:`retina.cli.callbacks.EvalDirCheck` checks it before Hydra writes there)."""
    import torch

    from retina.engine import distributed, rundir
    from retina.engine.build import build_val_loader, prepare_data_root
    from retina.engine.evaluation import evaluate_detections, format_metrics_table, run_inference
    from retina.engine.inference import build_val_dataset, check_label_mapping, data_config
    from retina.export.runtime import load_detector
    from retina.utils.device import select_device
    from retina.utils.io import write_json_atomic

    check_eval_config(cfg)
    path = required_value(cfg, "checkpoint")
    device = select_device(str(cfg.eval.device), "eval.device")
    overrides = {}
    if cfg.eval.score_thresh is not None:
        overrides["score_thresh"] = float(cfg.eval.score_thresh)
    model, state = load_detector(path, overrides)  # a checkpoint, or a retina-export .onnx
    data_cfg, where = data_config(cfg, state, path)

    dist = distributed.init_distributed(device.type)
    try:
        if device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
        run_dir = Path(str(distributed.broadcast_object(str(run_dir))))
        if dist.is_main:
            rundir.require_eval_dir(run_dir)
            rundir.lock_run_dir(run_dir)
        dataset = build_val_dataset(data_cfg, prepare_data_root(data_cfg, dist), where)
        check_label_mapping(state, dataset, path)
        loader = build_val_loader(
            dataset, batch_size=int(cfg.eval.batch_size),
            num_workers=int(cfg.eval.num_workers), dist=dist,
        )  # fmt: skip
        start = time.perf_counter()
        detections = run_inference(model.to(device), loader, device)
        seconds = time.perf_counter() - start
        log.info("inference on %d images in %.1f s (rank %d)", len(detections), seconds, dist.rank)
        metrics = evaluate_detections(
            detections, dataset, out_dir=run_dir if dist.is_main else None,
            backend=str(cfg.eval.backend), evaluated=[d["image_id"] for d in detections],
        )  # fmt: skip
        if dist.is_main:
            # This run's config, with the model and loss the checkpoint was trained with.
            config = OmegaConf.to_container(cfg, resolve=True)
            config["data"] = OmegaConf.to_container(data_cfg, resolve=True)
            for key in ("model", "loss"):
                config[key] = state["config"].get(key)
            config["trained_with"] = state["config"]
            # Same layout as retina-train's metrics.json: the metrics at the top level.
            payload = {
                **metrics, "checkpoint": str(path), "iteration": int(state.get("iteration", -1)),
                "inference_seconds": round(seconds, 2),
                "config": config,
            }  # fmt: skip
            write_json_atomic(run_dir / "metrics.json", payload, indent=2)
            log.info("wrote %s and %s", run_dir / "coco_results.json", run_dir / "metrics.json")
            print(format_metrics_table(metrics), flush=True)
        return metrics
    finally:
        rundir.release_run_dir(run_dir)
        distributed.cleanup()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def _app(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    with exit_on_user_error("retina-eval"):
        metrics = evaluate_checkpoint(cfg, HydraConfig.get().runtime.output_dir)
    return metrics.get("AP")


def main() -> None:
    """Console entry point ``retina-eval``."""
    run_cli(_app, "retina-eval")


if __name__ == "__main__":
    main()

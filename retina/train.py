"""``retina-train``: train a RetinaNet from ``configs/train.yaml`` and evaluate it.

    retina-train                                   # CPU demo: tiny model, shapes data
    retina-train model=retinanet_r50_fpn data=coco schedule=1x
    retina-train hydra.run.dir=outputs/run1 train.resume=true   # continue a run
    torchrun --nproc_per_node=2 -m retina.train hydra.run.dir=outputs/ddp

The run directory holds ``checkpoints/`` (``last.pt`` = newest), ``tensorboard/``,
``coco_results.json`` and ``metrics.json`` (final COCO metrics in percent + resolved config).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from retina.config import exit_on_user_error, run_cli, validate_config

log = logging.getLogger("retina.train")


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Validate ``cfg``, build everything, train (resuming if asked) and evaluate.

    Returns:
        the final COCO metrics in percent (``AP``, ``AP50``, ..., ``per_category``).
    """
    validate_config(cfg)
    from retina.engine import distributed
    from retina.engine.build import build_training_run, device_type
    from retina.engine.evaluation import format_metrics_table
    from retina.engine.logging import write_metrics_json

    dist = distributed.init_distributed(device_type(cfg.train.device))
    try:
        # every rank uses rank 0's directory (Hydra's timestamps may differ between processes)
        run_dir = Path(str(distributed.broadcast_object(str(run_dir))))
        run = build_training_run(cfg, run_dir, dist)
        start = time.perf_counter()
        try:
            run.trainer.train(run.start_iter, run.max_iter)
        finally:
            run.logger.close()
        metrics = run.eval_hook.metrics
        if dist.is_main:
            seconds = round(time.perf_counter() - start, 1)
            write_metrics_json(run_dir / "metrics.json", metrics, run.config,
                               iteration=run.trainer.iteration, train_seconds=seconds)  # fmt: skip
            print(format_metrics_table(metrics), flush=True)
            log.info("wrote %s", run_dir / "metrics.json")
        return metrics
    finally:
        distributed.cleanup()


# An absolute path: relative ones are resolved against the caller, which breaks console
# scripts run outside the repository.
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def _app(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    with exit_on_user_error("retina-train"):
        metrics = train(cfg, HydraConfig.get().runtime.output_dir)
    return metrics.get("AP")  # the objective for Hydra sweepers


def main() -> None:
    """Console entry point ``retina-train``."""
    run_cli(_app, "retina-train")


if __name__ == "__main__":
    main()

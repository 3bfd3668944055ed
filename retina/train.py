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
from omegaconf import DictConfig, OmegaConf

from retina.config import exit_on_user_error, run_cli, validate_config

log = logging.getLogger("retina.train")


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Validate ``cfg``, build everything, train (resuming if asked) and evaluate.

    Returns:
        the final COCO metrics in percent (``AP``, ``AP50``, ..., ``per_category``).
    """
    validate_config(cfg)
    import torch

    from retina.engine import checkpoint as ckpt
    from retina.engine import distributed
    from retina.engine.build import (
        aspect_groups,
        build_datasets,
        build_model,
        build_optimization,
        build_val_loader,
        prepare_data_root,
        select_device,
        set_determinism,
    )
    from retina.engine.hooks import CheckpointHook, EvalHook, LogHook
    from retina.engine.loader import ResumableLoader
    from retina.engine.logging import RunLogger, write_metrics_json
    from retina.engine.trainer import Trainer, unwrap

    t = cfg.train
    device_type = "cuda" if t.device == "cuda" or (
        t.device == "auto" and torch.cuda.is_available()
    ) else "cpu"  # fmt: skip
    dist = distributed.init_distributed(device_type)
    try:
        device = select_device(t.device, dist.local_rank)
        run_dir = Path(str(distributed.broadcast_object(str(run_dir))))
        set_determinism(int(t.seed), bool(t.deterministic))
        root = prepare_data_root(cfg.data, dist)
        train_set, val_set = build_datasets(cfg.data, root)
        model = build_model(cfg.model, cfg.loss, train_set.num_classes)
        model.to(device)
        if t.channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer, scheduler = build_optimization(
            model, cfg.optim, cfg.schedule, batch_size=int(t.batch_size), max_iter=int(t.max_iter)
        )
        loader = ResumableLoader(
            train_set,
            batch_size=int(t.batch_size),
            seed=int(t.seed),
            collate_fn=_collate(),
            rank=dist.rank,
            world_size=dist.world_size,
            num_workers=int(t.num_workers),
            group_ids=aspect_groups(train_set),
            pin_memory=device.type == "cuda",
        )
        val_loader = build_val_loader(
            val_set, batch_size=int(t.eval_batch_size), num_workers=int(t.num_workers), dist=dist
        )

        ckpt_dir = run_dir / "checkpoints"
        resume_state = None
        if t.resume:
            found = ckpt.find_resume_checkpoint(ckpt_dir)
            if found is None:
                log.warning(
                    "train.resume=true but %s holds no checkpoint: starting fresh", ckpt_dir
                )
            else:
                path, resume_state = found
                ckpt.load_model_state(model, resume_state["model"], path)
                log.info("resuming from %s (iteration %d)", path, resume_state["iteration"])

        net: torch.nn.Module = model
        if dist.is_distributed:
            ids = [device.index] if device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if t.compile:
            net = torch.compile(net)

        start_iter = int(resume_state["iteration"]) if resume_state else 0
        logger = RunLogger(
            run_dir, max_iter=int(t.max_iter), start_iter=start_iter, enabled=dist.is_main
        )
        config = OmegaConf.to_container(cfg, resolve=True)
        eval_hook = EvalHook(
            period=int(t.eval_period),
            val_loader=val_loader,
            val_set=val_set,
            logger=logger,
            run_dir=run_dir,
            vis_images=int(t.vis_images),
            vis_score_thresh=float(t.vis_score_thresh),
        )
        hooks = [
            LogHook(logger, period=int(t.log_period)),
            eval_hook,
            CheckpointHook(
                period=int(t.checkpoint_period),
                directory=ckpt_dir,
                keep=int(t.keep_checkpoints),
                extra={
                    "cat_ids": [int(c) for c in train_set.cat_ids],
                    "class_names": list(train_set.class_names),
                    "config": config,
                },
                logger=logger,
                enabled=dist.is_main,
            ),
        ]
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.amp) if t.amp else None
        trainer = Trainer(
            model=net,
            optimizer=optimizer,
            scheduler=scheduler,
            data=loader,
            device=device,
            amp_dtype=amp,
            clip_grad_norm=t.clip_grad_norm,
            max_nonfinite=int(t.max_nonfinite),
            sync_num_pos=getattr(unwrap(net), "loss_normalizer", None) == "batch",
            hooks=hooks,
        )
        if resume_state is not None:
            trainer.load_state_dict(resume_state)
        start = time.perf_counter()
        try:
            trainer.train(start_iter, int(t.max_iter))
        finally:
            logger.close()
        metrics = eval_hook.metrics
        if dist.is_main:
            write_metrics_json(
                run_dir / "metrics.json",
                metrics,
                config,
                iteration=trainer.iteration,
                train_seconds=round(time.perf_counter() - start, 1),
            )
            from retina.engine.evaluation import format_metrics_table

            print(format_metrics_table(metrics), flush=True)
            log.info("wrote %s", run_dir / "metrics.json")
        return metrics
    finally:
        distributed.cleanup()


def _collate():
    from retina.data import collate_detection

    return collate_detection


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

"""Build the training run's parts from a composed config: data, model, optimizer, schedule,
and the :class:`~retina.engine.trainer.Trainer` with its hooks.

Each builder takes the config nodes it needs (never the whole config into a module) and
returns plain objects; :func:`build_training_run` wires them together.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Subset

from retina.engine import checkpoint as ckpt
from retina.engine.distributed import DistInfo, barrier
from retina.engine.hooks import CheckpointHook, EvalHook, LogHook
from retina.engine.inference import dataset_options
from retina.engine.loader import ResumableLoader
from retina.engine.logging import RunLogger
from retina.engine.optim import WarmupLRSchedule, build_optimizer, scaled_lr
from retina.engine.trainer import Trainer
from retina.errors import ConfigError
from retina.ops.focal_backend import resolved_backend
from retina.utils.device import select_device
from retina.utils.instantiate import instantiate_node

log = logging.getLogger("retina.train")


def set_determinism(seed: int, deterministic: bool) -> None:
    """Seed every RNG and, if asked, force deterministic kernels."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this for deterministic matmuls; harmless on CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def _remove_stale_generation(root: Path) -> None:
    """Delete temporary dataset folders (``.<name>.tmp<pid>``) that an interrupted or killed
    generation left beside ``root``; those of a still running process are kept."""
    prefix = f".{root.name}.tmp"
    if not root.parent.is_dir():
        return
    for tmp in root.parent.glob(f"{prefix}*"):
        pid = tmp.name[len(prefix):]
        if not pid.isdigit():
            continue
        if int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                continue  # that process is alive: maybe generating right now
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        log.info("removing %s, left by an interrupted data generation", tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def _is_generated_root(data: DictConfig, root: Path) -> bool:
    """Whether ``root`` is where ``data.generator`` generates the dataset
    (``paths.data_dir/<data.name>``, the default root; a root set by hand holds the user's
    own data, and the generator options do not describe it)."""
    try:
        data_dir = OmegaConf.select(data, "..paths.data_dir", default=None)
    except Exception:  # noqa: BLE001 - a data node without a parent config: not known
        return False
    if data_dir is None:
        return False
    return root.resolve() == (Path(str(data_dir)) / str(data.name)).resolve()


def prepare_data_root(data: DictConfig, dist: DistInfo) -> Path:
    """Return ``data.root``; generate the synthetic dataset there first when it is missing
    and ``data.generator`` is set (rank 0 writes into a temporary folder and renames it, so
    an interrupted generation never leaves a half-written dataset behind; the temporary
    folder is removed on Ctrl-C or SIGTERM, and one left by a killed process on the next
    start). An existing dataset at the generator's root must have been generated with
    ``data.generator``'s options (:func:`retina.data.shapes.check_generated_root`)."""
    root = Path(data.root)
    if data.get("generator") is not None and root.is_dir() and _is_generated_root(data, root):
        from retina.data.shapes import check_generated_root

        check_generated_root(root, OmegaConf.to_container(data.generator, resolve=True))
    if root.is_dir() or data.get("generator") is None:
        return root
    if dist.is_main:
        from retina.data.shapes import generator_options, make_shapes_dataset

        params: dict[str, Any] = OmegaConf.to_container(data.generator, resolve=True)  # type: ignore[assignment]
        _remove_stale_generation(root)
        tmp = root.with_name(f".{root.name}.tmp{os.getpid()}")
        log.info("generating the %s dataset in %s (%s)", data.name, root, params)
        try:
            make_shapes_dataset(tmp, **generator_options(**params))
        except ValueError as err:  # an unknown option or a value out of range
            shutil.rmtree(tmp, ignore_errors=True)
            raise ConfigError("data.generator", str(err)) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            os.replace(tmp, root)
        except OSError:  # another process generated it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
            if not root.is_dir():
                raise
    barrier()
    return root


def _transforms(node: Any, key: str) -> Any:
    return None if node is None else instantiate_node(node, key)


def build_datasets(data: DictConfig, root: Path) -> tuple[Any, Any]:
    """The training set (images without boxes dropped; broken images replaced by the next
    valid one) and the validation set (every image kept; broken ones skipped)."""
    from retina.data import CocoDetection, DataError

    extra = dataset_options(data)
    train = CocoDetection(
        root / data.train_ann,
        root / data.train_images,
        transforms=_transforms(data.get("train_transforms"), "data.train_transforms"),
        drop_empty=True,
        on_broken="next",
        **extra,
    )
    val = CocoDetection(
        root / data.val_ann,
        root / data.val_images,
        transforms=_transforms(data.get("val_transforms"), "data.val_transforms"),
        drop_empty=False,
        on_broken="skip",
        **extra,
    )
    if list(train.cat_ids) != list(val.cat_ids):
        raise DataError(
            f"{val.ann_file}: categories {list(val.cat_ids)} differ from the training set's "
            f"{list(train.cat_ids)} ({train.ann_file})"
        )
    if len(train) == 0:
        raise DataError(f"{train.ann_file}: no training image has a box")
    return train, val


def aspect_groups(dataset: Any) -> list[int] | None:
    """Aspect-ratio group per image (portrait / landscape), or None if the dataset cannot
    tell; batches then hold one group each."""
    ratios = getattr(dataset, "aspect_ratios", None)
    if ratios is None:
        return None
    from retina.data import aspect_ratio_group_ids

    return aspect_ratio_group_ids(ratios()).tolist()


def build_val_loader(
    dataset: Any, *, batch_size: int, num_workers: int, dist: DistInfo
) -> DataLoader:
    """This rank's shard of the validation set (no padding, so no image is scored twice)."""
    from retina.data import collate_detection

    shard = Subset(dataset, list(range(dist.rank, len(dataset), dist.world_size)))
    return DataLoader(
        shard,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate_detection,
    )


def build_model(model: DictConfig, loss: DictConfig, num_classes: int) -> nn.Module:
    """Instantiate the classification loss, then the model with it and ``num_classes``."""
    cls_loss = instantiate_node(loss, "loss")
    return instantiate_node(model, "model", num_classes=num_classes, cls_loss=cls_loss)


def build_optimization(
    model: nn.Module, optim: DictConfig, schedule: DictConfig, *, batch_size: int, max_iter: int
) -> tuple[torch.optim.Optimizer, WarmupLRSchedule]:
    """SGD (or any ``optim.optimizer`` partial) at the linearly scaled LR, and the schedule."""
    lr = scaled_lr(optim.base_lr, batch_size, optim.reference_batch_size)
    optimizer = build_optimizer(
        model,
        instantiate_node(optim.optimizer, "optim.optimizer"),
        lr=lr,
        weight_decay=float(optim.weight_decay),
        no_decay_norm_bias=bool(optim.no_decay_norm_bias),
    )
    scheduler = WarmupLRSchedule(
        optimizer,
        max_iter=max_iter,
        name=schedule.name,
        steps=list(schedule.steps),
        gamma=schedule.gamma,
        warmup_iters=schedule.warmup_iters,
        warmup_factor=schedule.warmup_factor,
        min_factor=schedule.min_factor,
    )
    return optimizer, scheduler


@dataclass
class TrainingRun:
    """Everything :func:`retina.cli.train.train` needs to run and report."""

    trainer: Trainer
    logger: RunLogger
    eval_hook: EvalHook
    start_iter: int
    max_iter: int
    config: dict[str, Any]
    focal_backend: str  # how the loss's focal kernels run (the resolved ``loss.backend``)

    def train(self) -> tuple[dict[str, float], float]:
        """Train from ``start_iter`` to ``max_iter``, the logger closed even when training
        fails; returns the final evaluation's metrics and the seconds it took."""
        start = time.perf_counter()
        try:
            self.trainer.train(self.start_iter, self.max_iter)
        finally:
            self.logger.close()
        return self.eval_hook.metrics, time.perf_counter() - start


def load_resume_state(
    model: nn.Module, directory: Path, config: dict[str, Any], train_set: Any, reset: str | None
) -> tuple[dict[str, Any] | None, list[str]]:
    """Load the newest valid checkpoint of ``directory`` into ``model`` after checking that
    this run's ``config`` keeps what the checkpoint restores (:mod:`retina.engine.resume`)
    and that ``train_set`` has the checkpoint's categories (ids and names).

    Returns:
        ``(state, reset keys)``: the checkpoint (the optimizer, schedule, RNG and data position
        go to the trainer), None when there is none; the changed keys rebuilt from ``config``.
    """
    from retina.engine.inference import check_label_mapping
    from retina.engine.resume import check_resume_config, check_resume_iteration

    found = ckpt.find_resume_checkpoint(directory)
    if found is None:
        log.warning("train.resume=true but %s holds no checkpoint: starting fresh", directory)
        return None, []
    path, state = found
    check_resume_iteration(int(state["iteration"]), config, str(path))
    reset_keys = check_resume_config(state.get("config"), config, reset, str(path))
    if "cat_ids" in state and "class_names" in state:
        check_label_mapping(state, train_set, str(path))
    ckpt.load_model_state(model, state["model"], path)
    log.info("resuming from %s (iteration %d)", path, state["iteration"])
    if reset_keys:
        log.warning("train.resume_reset=%s: optimizer and LR schedule rebuilt from the new config "
                    "at iteration %d (changed: %s)", reset, state["iteration"],
                    ", ".join(reset_keys))  # fmt: skip
    return state, reset_keys


def restore_trainer(trainer: Trainer, state: dict[str, Any], reset: bool) -> None:
    """Restore the trainer from ``state``; with ``reset`` the optimizer and the schedule keep
    their new configuration and only take the checkpoint's iteration."""
    if not reset:
        trainer.load_state_dict(state)
        return
    iteration = int(state["iteration"])
    trainer.load_state_dict({k: v for k, v in state.items() if k not in ("optimizer", "scheduler")})
    scheduler = trainer.scheduler
    scheduler.last_epoch = iteration
    for group, lr in zip(trainer.optimizer.param_groups, scheduler.get_lr(), strict=True):
        group["lr"] = lr
    scheduler._last_lr = [group["lr"] for group in trainer.optimizer.param_groups]


def wrap_model(model: nn.Module, device: torch.device, dist: DistInfo, compile: bool) -> nn.Module:
    """``torch.compile`` the dense part if asked, then DistributedDataParallel under torchrun.

    Compiling compiles the backbone, FPN and heads in place (``nn.Module.compile``: the
    parameter names and checkpoints do not change). Anchor matching, the loss and
    postprocessing stay eager: they depend on the number of boxes per image, which would
    make the compiler break graphs and recompile at every new count.
    """
    if compile:
        for part in (model.backbone, model.fpn, model.head):
            part.compile()
    if dist.is_distributed:
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model


def check_focal_kernels(
    backend: str,
    num_classes: int,
    amp: torch.dtype | None,
    device: torch.device,
    rows: int = 1 << 15,
) -> None:
    """Before the first step of a run whose loss runs the Triton kernels (``backend`` is the
    resolved ``"triton"``): compare them with the float64 reference
    (:func:`retina.ops.focal_triton_check.check_triton`) at ``rows`` anchors x the run's
    classes, in float32 and the AMP dtype. A mismatch stops the run with a
    :class:`ConfigError` naming ``loss.backend``. Other backends: nothing to check."""
    if backend != "triton":
        return
    from retina.ops.focal_triton_check import check_triton

    for dtype in dict.fromkeys((torch.float32, amp or torch.float32)):
        problems = check_triton(rows, num_classes, dtype, device)
        if problems:
            raise ConfigError(
                "loss.backend",
                f"the Triton focal-loss kernels disagree with the float64 reference on "
                f"{device} ({problems[0]}); run python scripts/check_triton.py for details, "
                "or train with loss.backend=eager",
            )
    log.info("focal-loss kernels: Triton agrees with the reference (%d x %d)", rows, num_classes)


def build_training_run(
    cfg: DictConfig,
    run_dir: Path,
    dist: DistInfo,
    model_factory: Callable[[DictConfig, DictConfig, int], nn.Module] = build_model,
) -> TrainingRun:
    """Data, model, optimizer, loaders, hooks and trainer for a validated config; restores
    the newest checkpoint of ``run_dir/checkpoints`` when ``train.resume`` is set.
    ``model_factory(cfg.model, cfg.loss, num_classes)`` builds the model (another
    implementation, e.g. ``scripts/train_torchvision.py``, trains on the same data)."""
    from retina.data import collate_detection

    t = cfg.train
    device = select_device(str(t.device), "train.device", dist.local_rank)
    set_determinism(int(t.seed), bool(t.deterministic))
    train_set, val_set = build_datasets(cfg.data, prepare_data_root(cfg.data, dist))
    model = model_factory(cfg.model, cfg.loss, train_set.num_classes).to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimization(
        model, cfg.optim, cfg.schedule, batch_size=int(t.batch_size), max_iter=int(t.max_iter)
    )
    loader = ResumableLoader(
        train_set,
        batch_size=int(t.batch_size),
        seed=int(t.seed),
        collate_fn=collate_detection,
        rank=dist.rank,
        world_size=dist.world_size,
        num_workers=int(t.num_workers),
        group_ids=aspect_groups(train_set),
        pin_memory=device.type == "cuda",
    )
    ckpt_dir = run_dir / "checkpoints"
    config: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    state = None
    if t.resume:
        state, _ = load_resume_state(
            model, ckpt_dir, config, train_set, t.get("resume_reset")
        )
    start_iter = int(state["iteration"]) if state else 0

    logger = RunLogger(
        run_dir, max_iter=int(t.max_iter), start_iter=start_iter, enabled=dist.is_main
    )
    val_loader = build_val_loader(
        val_set, batch_size=int(t.eval_batch_size), num_workers=int(t.num_workers), dist=dist
    )
    eval_hook = EvalHook(
        period=int(t.eval_period),
        val_loader=val_loader,
        val_set=val_set,
        logger=logger,
        run_dir=run_dir,
        vis_images=int(t.vis_images),
        vis_score_thresh=float(t.vis_score_thresh),
        time_images=int(t.get("time_inference") or 0),
        is_main=dist.is_main,
    )
    labels = {
        "cat_ids": [int(c) for c in train_set.cat_ids],
        "class_names": list(train_set.class_names),
    }
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.amp) if t.amp else None
    focal_backend = resolved_backend(
        getattr(getattr(model, "cls_loss", None), "backend", "eager"), device.type
    )
    log.info("focal-loss kernels: %s", focal_backend)
    check_focal_kernels(focal_backend, train_set.num_classes, amp, device)
    checkpoint_hook = CheckpointHook(
        period=int(t.checkpoint_period),
        directory=ckpt_dir,
        keep=int(t.keep_checkpoints),
        extra={**labels, "config": config, "focal_backend": focal_backend},
        logger=logger,
        enabled=dist.is_main,
    )
    trainer = Trainer(
        model=wrap_model(model, device, dist, bool(t.compile)),
        optimizer=optimizer,
        scheduler=scheduler,
        data=loader,
        device=device,
        amp_dtype=amp,
        clip_grad_norm=t.clip_grad_norm,
        max_nonfinite=int(t.max_nonfinite),
        hooks=[LogHook(logger, period=int(t.log_period)), eval_hook, checkpoint_hook],
    )
    if state is not None:
        restore_trainer(trainer, state, reset=t.get("resume_reset") is not None)
    return TrainingRun(
        trainer, logger, eval_hook, start_iter, int(t.max_iter), config, focal_backend
    )

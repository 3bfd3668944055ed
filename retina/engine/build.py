"""Build the training run's parts from a composed config: data, model, optimizer, schedule.

Each function takes the config nodes it needs (never the whole config into a module) and
returns plain objects that :class:`~retina.engine.trainer.Trainer` receives.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Subset

from retina.config import ConfigError, one_line
from retina.engine.distributed import DistInfo, barrier
from retina.engine.optim import WarmupLRSchedule, build_optimizer, scaled_lr

log = logging.getLogger("retina.train")


def select_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda: no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


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


def prepare_data_root(data: DictConfig, dist: DistInfo) -> Path:
    """Return ``data.root``; generate the synthetic dataset there first when it is missing
    and ``data.generator`` is set (rank 0 writes into a temporary folder and renames it, so
    an interrupted generation never leaves a half-written dataset behind)."""
    root = Path(data.root)
    if root.is_dir() or data.get("generator") is None:
        return root
    if dist.is_main:
        from retina.data.shapes import make_shapes_dataset

        params: dict[str, Any] = OmegaConf.to_container(data.generator, resolve=True)  # type: ignore[assignment]
        tmp = root.with_name(f".{root.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        log.info("generating the %s dataset in %s (%s)", data.name, root, params)
        make_shapes_dataset(tmp, **params)
        try:
            os.replace(tmp, root)
        except OSError:  # another process generated it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
            if not root.is_dir():
                raise
    barrier()
    return root


def instantiate_node(node: Any, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` whose failures (bad argument values, missing weight
    files) become a :class:`ConfigError` naming the config node."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        raise ConfigError(key, one_line(exc.__cause__ or exc)) from None
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(key, one_line(exc)) from None


def _transforms(node: Any, key: str) -> Any:
    return None if node is None else instantiate_node(node, key)


def build_datasets(data: DictConfig, root: Path) -> tuple[Any, Any]:
    """The training set (images without boxes dropped; broken images replaced by the next
    valid one) and the validation set (every image kept; broken ones skipped)."""
    from retina.data import CocoDetection, DataError

    extra = {}
    if data.get("max_broken_fraction") is not None:
        extra["max_broken_fraction"] = float(data.max_broken_fraction)
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

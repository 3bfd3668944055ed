"""Loading a checkpoint for inference and meeting it with a dataset (eval, predict, figures).

The checkpoint's config is data from a file: its model, loss and data nodes are built only
through :func:`retina.utils.instantiate.instantiate_untrusted`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from retina.config import validate_config
from retina.errors import CheckpointError, DataError
from retina.utils.instantiate import check_targets, instantiate_untrusted

log = logging.getLogger("retina.eval")


def load_for_inference(path: str, overrides: Mapping[str, Any] | None = None) -> tuple[Any, dict]:
    """Load a checkpoint and rebuild its model in eval mode (on CPU)."""
    from retina.engine.checkpoint import build_model_from_checkpoint, load_checkpoint

    state = load_checkpoint(path, required=("model", "config", "cat_ids", "class_names"))
    model = build_model_from_checkpoint(state, path, overrides=overrides)
    return model.eval(), state


def data_config(cfg: DictConfig, state: Mapping[str, Any], path: str) -> tuple[DictConfig, str]:
    """The chosen ``data/`` group (validated), else the checkpoint's data config.

    Returns:
        ``(data config, where)``: ``where`` names its origin for messages (``"data"`` or
        ``"<checkpoint>: config.data"``).
    """
    if cfg.get("data") is not None:
        validate_config(OmegaConf.masked_copy(cfg, ["data", "paths"]))
        return cfg.data, "data"
    stored = state["config"].get("data")
    where = f"{path}: config.data"
    if not isinstance(stored, Mapping) or "root" not in stored:
        raise CheckpointError(f"{path}: checkpoint has no data config; choose one with data=NAME")
    check_targets(stored, where, "data")
    stored_cfg = OmegaConf.create(dict(stored))
    _refuse_generation_outside(cfg, stored_cfg, where)
    return stored_cfg, where


def _refuse_generation_outside(cfg: DictConfig, data_cfg: DictConfig, where: str) -> None:
    """A stored data config whose dataset is missing would be generated at its root, which
    was resolved when the checkpoint was trained (often relative: ``./data/shapes``). Only
    under this run's ``paths.data_dir``; elsewhere the user is told how to get it.

    Raises:
        DataError: one line naming the missing root and the ways out.
    """
    root = Path(str(data_cfg.root))
    if root.is_dir() or data_cfg.get("generator") is None:
        return
    data_dir = OmegaConf.select(cfg, "paths.data_dir", default=None)
    if data_dir is not None and Path(str(data_dir)).resolve() in root.resolve().parents:
        return
    raise DataError(
        f"{root}: dataset not found ({where}.root, outside paths.data_dir={data_dir}); "
        "choose the dataset with data=NAME (data=shapes generates it under paths.data_dir; "
        "data=coco data.root=PATH ...)"
    )


def build_val_dataset(data_cfg: DictConfig, root: Path, where: str = "data") -> Any:
    """``data_cfg``'s val split, after its annotation file passed the JSON validation."""
    from retina.data import CocoDetection
    from retina.data.validate import raise_for_problems, validate_coco

    ann_file = root / str(data_cfg.val_ann)
    if not ann_file.exists():  # a FIFO or folder is refused by validate_coco
        raise DataError(f"{ann_file}: annotation file not found (data.root={root})")
    raise_for_problems(validate_coco(ann_file, check_images=False))
    transforms = None
    if data_cfg.get("val_transforms") is not None:
        transforms = instantiate_untrusted(data_cfg.val_transforms, f"{where}.val_transforms",
                                           "data.val_transforms")
    return CocoDetection(
        ann_file, root / str(data_cfg.val_images), transforms,
        drop_empty=False, check=False, on_broken="skip", **dataset_options(data_cfg),
    )  # fmt: skip


def dataset_options(data_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`~retina.data.CocoDetection` keyword arguments a data config may set
    (``max_broken_fraction``, ``invalid_boxes``); unset keys keep the class's defaults."""
    options: dict[str, Any] = {}
    if data_cfg.get("max_broken_fraction") is not None:
        options["max_broken_fraction"] = float(data_cfg["max_broken_fraction"])
    if data_cfg.get("invalid_boxes") is not None:
        options["invalid_boxes"] = str(data_cfg["invalid_boxes"])
    return options


def check_label_mapping(state: Mapping[str, Any], dataset: Any, path: str) -> None:
    """The checkpoint's classes must be the dataset's: the same category ids with the same
    names, in the same label order (a swapped name would report one class's AP as another's).

    Raises:
        DataError: one line naming both files and the first difference.
    """
    ckpt = [(int(c), str(n)) for c, n in zip(state["cat_ids"], state["class_names"], strict=False)]
    data = [(int(c), str(n)) for c, n in zip(dataset.cat_ids, dataset.class_names, strict=False)]
    if ckpt == data:
        return

    def describe(cats: list[tuple[int, str]]) -> str:
        more = f", ... ({len(cats)} in all)" if len(cats) > 10 else ""
        return "[" + ", ".join(f"{c} {n!r}" for c, n in cats[:10]) + more + "]"

    raise DataError(
        f"{dataset.ann_file}: categories (id name) {describe(data)} do not match the "
        f"checkpoint's {describe(ckpt)} ({path})"
    )

"""``retina-stats``: how imbalanced a dataset is under a model's anchors (thin Hydra entry).

    retina-stats data=shapes model=retinanet_tiny images=128 out=outputs/stats/shapes
    retina-stats data=shapes checkpoint=PATH out=DIR     # + CE / FL loss shares (Figure 4)

Writes ``out/stats.json`` and ``out/stats.md``; see :mod:`retina.analysis.imbalance`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from retina.cli import exit_on_interrupt

with exit_on_interrupt("retina-stats"):  # Ctrl-C while loading: one line
    from omegaconf import DictConfig, OmegaConf

    from retina.cli.common import hydra_main
    from retina.errors import ConfigError

log = logging.getLogger("retina.stats")


def _dataset(cfg: DictConfig) -> Any:
    from retina.data import CocoDetection
    from retina.engine.build import prepare_data_root
    from retina.engine.distributed import DistInfo
    from retina.engine.inference import dataset_options
    from retina.utils.instantiate import instantiate_node

    split = str(cfg.split)
    if split not in ("train", "val"):
        raise ConfigError("split", f"must be train or val, got {split!r}")
    root = prepare_data_root(cfg.data, DistInfo())
    transforms = None
    if cfg.data.get("val_transforms") is not None:
        transforms = instantiate_node(cfg.data.val_transforms, "data.val_transforms")
    return CocoDetection(root / cfg.data[f"{split}_ann"], root / cfg.data[f"{split}_images"],
                         transforms=transforms, drop_empty=False, on_broken="skip",
                         **dataset_options(cfg.data))


def _model(cfg: DictConfig, dataset: Any, device: Any) -> tuple[Any, dict | None]:
    """The checkpoint's model on ``device`` (its categories must be the dataset's, as in
    ``retina-eval``), else ``model``'s anchors and matcher without weights."""
    num_classes = dataset.num_classes
    if cfg.checkpoint is not None:
        from retina.engine.inference import check_label_mapping, load_for_inference

        model, state = load_for_inference(str(cfg.checkpoint))
        check_label_mapping(state, dataset, str(cfg.checkpoint))
        return model.to(device), state
    from retina.engine.build import build_model

    model_cfg = cfg.model.copy()
    if "weights" in model_cfg:
        model_cfg.weights = None  # anchors and matching only: no pretrained weights needed
    return build_model(model_cfg, cfg.loss, num_classes).eval(), None


def run_stats(cfg: DictConfig) -> dict[str, Any]:
    """Everything ``retina-stats`` does; returns the ``stats.json`` payload."""
    import torch

    from retina.analysis.imbalance import (
        count_image,
        dataset_statistics,
        format_statistics,
        loss_shares,
    )
    from retina.analysis.loss_cdf import anchor_logits_and_labels, per_anchor_losses
    from retina.utils.device import select_device
    from retina.utils.io import write_json_atomic, write_text_atomic

    images = cfg.images
    if not isinstance(images, int) or isinstance(images, bool) or images < 1:
        raise ConfigError("images", f"must be an integer >= 1, got {images!r}")
    device = select_device(str(cfg.device), "device")
    dataset = _dataset(cfg)
    model, state = _model(cfg, dataset, device)
    counts, losses = [], {0.0: ([], []), 2.0: ([], [])}
    for index in range(min(images, len(dataset))):
        item = dataset[index]
        if item is None:
            continue
        image, target = item
        counts.append(count_image(model, image, target))
        if state is not None:
            logits, labels = anchor_logits_and_labels(model, [image.to(device)],
                                                      [target])
            for gamma, (pos, neg) in per_anchor_losses(logits, labels, (0.0, 2.0)).items():
                losses[gamma][0].append(pos.cpu())
                losses[gamma][1].append(neg.cpu())
    stats = dataset_statistics(counts, list(dataset.class_names))
    if state is not None:
        stats["loss_shares"] = {
            name: loss_shares(torch.cat(losses[g][0]), torch.cat(losses[g][1]))
            for name, g in (("ce", 0.0), ("fl_gamma2", 2.0))
        }
    stats["setup"] = {
        "data": str(cfg.data.name), "split": str(cfg.split),
        "min_size": OmegaConf.select(cfg, "data.val_transforms.min_size"),
        "max_size": OmegaConf.select(cfg, "data.val_transforms.max_size"),
        "checkpoint": None if cfg.checkpoint is None else str(cfg.checkpoint),
        "anchors_per_location": int(model.anchor_generator.num_anchors),
        "anchor_strides": list(model.anchor_generator.strides),
        "fg_iou_thresh": model.matcher.fg_iou_thresh, "bg_iou_thresh": model.matcher.bg_iou_thresh,
    }
    out = Path(str(cfg.out))
    write_json_atomic(out / "stats.json", stats, indent=2)
    title = (f"{cfg.data.name} ({cfg.split}, {stats['setup']['min_size']} px): "
             f"{stats['setup']['anchors_per_location']} anchors per location")
    write_text_atomic(out / "stats.md", format_statistics(stats, title))
    print(format_statistics(stats, title), end="", flush=True)
    log.info("wrote %s and stats.md", out / "stats.json")
    return stats


main = hydra_main(run_stats, "retina-stats", "stats")


if __name__ == "__main__":
    main()

"""``retina-eval``: COCO mAP of a checkpoint on a dataset's val split (thin Hydra entry point).

    retina-eval checkpoint=PATH [data=coco data.root=...] [hydra.run.dir=...]
    python -m retina.eval checkpoint=PATH
    torchrun --nproc_per_node=2 -m retina.eval checkpoint=PATH

The model and its label mapping come from the checkpoint; the dataset from the chosen
``data/`` group, else from the checkpoint's own data config. Under ``torchrun`` every process
runs inference on its share of the images and rank 0 scores the gathered detections.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from retina.config import ConfigError, exit_on_user_error, run_cli, validate_config

log = logging.getLogger("retina.eval")

EVAL_KEYS = frozenset({"backend", "batch_size", "num_workers", "device", "score_thresh"})


@contextlib.contextmanager
def exit_on_cli_error(prog: str) -> Iterator[None]:
    """:func:`retina.config.exit_on_user_error`, plus unwritable results files."""
    from retina.engine.evaluation import ResultsError

    try:
        with exit_on_user_error(prog):
            yield
    except ResultsError as err:
        sys.stderr.write(f"{prog}: error: {err}\n")
        sys.stderr.flush()
        sys.exit(1)


def required_value(cfg: DictConfig, key: str) -> str:
    """A mandatory string value (``???`` in the config), with a clear error when unset."""
    if OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, ""):
        raise ConfigError(key, f"is required ({key}=...)")
    return str(cfg.get(key))


def resolve_device(name: str, key: str) -> Any:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    import torch

    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(key, f"must be one of auto, cpu, cuda; got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(key, "cuda was asked for but no CUDA device is available")
    return torch.device(name)


def load_for_inference(path: str, overrides: Mapping[str, Any] | None = None) -> tuple[Any, dict]:
    """Load a checkpoint and rebuild its model in eval mode (on CPU)."""
    from retina.engine.checkpoint import build_model_from_checkpoint, load_checkpoint

    state = load_checkpoint(path, required=("model", "config", "cat_ids", "class_names"))
    model = build_model_from_checkpoint(state, path, overrides=overrides)
    return model.eval(), state


def data_config(cfg: DictConfig, state: Mapping[str, Any], path: str) -> DictConfig:
    """The chosen ``data/`` group (validated), else the checkpoint's data config."""
    from retina.engine.checkpoint import CheckpointError, _check_targets

    if cfg.get("data") is not None:
        validate_config(OmegaConf.masked_copy(cfg, ["data", "paths"]))
        return cfg.data
    stored = state["config"].get("data")
    if not isinstance(stored, Mapping) or "root" not in stored:
        raise CheckpointError(f"{path}: checkpoint has no data config; choose one with data=NAME")
    _check_targets(stored, f"{path}: config.data")
    return OmegaConf.create(dict(stored))


def build_val_dataset(data_cfg: DictConfig, root: Path) -> Any:
    """``data_cfg``'s val split, after its annotation file passed the JSON validation."""
    from hydra.errors import HydraException
    from hydra.utils import instantiate

    from retina.data import CocoDetection, DataError
    from retina.data.validate import raise_for_problems, validate_coco

    ann_file = root / str(data_cfg.val_ann)
    if not ann_file.is_file():
        raise DataError(f"{ann_file}: annotation file not found (data.root={root})")
    raise_for_problems(validate_coco(ann_file, check_images=False))
    transforms = None
    if data_cfg.get("val_transforms") is not None:
        try:
            transforms = instantiate(data_cfg.val_transforms)
        except HydraException as err:
            first = str(err).strip().splitlines()[0]
            raise ConfigError("data.val_transforms", f"cannot instantiate ({first})") from None
    extra = {}
    if data_cfg.get("max_broken_fraction") is not None:
        extra["max_broken_fraction"] = float(data_cfg.max_broken_fraction)
    if data_cfg.get("invalid_boxes") is not None:
        extra["invalid_boxes"] = str(data_cfg.invalid_boxes)
    return CocoDetection(
        ann_file, root / str(data_cfg.val_images), transforms,
        drop_empty=False, check=False, on_broken="skip", **extra,
    )  # fmt: skip


def check_label_mapping(state: Mapping[str, Any], dataset: Any, path: str) -> None:
    """The checkpoint's classes must be the dataset's, in the same label order."""
    from retina.data import DataError

    ckpt_ids = [int(c) for c in state["cat_ids"]]
    data_ids = [int(c) for c in dataset.cat_ids]
    if ckpt_ids != data_ids:
        raise DataError(
            f"{dataset.ann_file}: category ids {data_ids[:10]} do not match the checkpoint's "
            f"{ckpt_ids[:10]} ({path})"
        )
    if list(state["class_names"]) != list(dataset.class_names):
        log.warning("class names differ: checkpoint %s, dataset %s",
                    list(state["class_names"]), list(dataset.class_names))  # fmt: skip


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
    """Everything ``retina-eval`` does; returns the metrics (the same on every rank)."""
    import torch

    from retina.engine import distributed
    from retina.engine.build import build_val_loader, prepare_data_root
    from retina.engine.evaluation import (
        evaluate_detections,
        format_metrics_table,
        run_inference,
        write_json_atomic,
    )

    check_eval_config(cfg)
    path = required_value(cfg, "checkpoint")
    device = resolve_device(str(cfg.eval.device), "eval.device")
    overrides = {}
    if cfg.eval.score_thresh is not None:
        overrides["score_thresh"] = float(cfg.eval.score_thresh)
    model, state = load_for_inference(path, overrides)
    data_cfg = data_config(cfg, state, path)

    dist = distributed.init_distributed(device.type)
    try:
        if device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
        run_dir = Path(str(distributed.broadcast_object(str(run_dir))))
        dataset = build_val_dataset(data_cfg, prepare_data_root(data_cfg, dist))
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
            backend=str(cfg.eval.backend),
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
                "num_images": len(dataset), "inference_seconds": round(seconds, 2),
                "config": config,
            }  # fmt: skip
            write_json_atomic(run_dir / "metrics.json", payload, indent=2)
            log.info("wrote %s and %s", run_dir / "coco_results.json", run_dir / "metrics.json")
            print(format_metrics_table(metrics), flush=True)
        return metrics
    finally:
        distributed.cleanup()


# Absolute: a relative config_path would be resolved against the console script's caller.
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def _app(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    with exit_on_cli_error("retina-eval"):
        metrics = evaluate_checkpoint(cfg, HydraConfig.get().runtime.output_dir)
    return metrics.get("AP")


def main() -> None:
    """Console entry point ``retina-eval``."""
    run_cli(_app, "retina-eval")


if __name__ == "__main__":
    main()

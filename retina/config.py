"""Validation of composed configs, run before any work starts.

Every check raises :class:`ConfigError` whose one-line message starts with the dotted key,
e.g. ``loss.gamma: must satisfy 0.0 <= value, got -1.0``. Nodes that are absent are not
checked, so the same function serves ``retina-train`` and ``retina-eval``. The ranges of the
``_target_`` nodes (loss, model) are not repeated here: those nodes are built on the meta
device and their constructors' checks (:mod:`retina.utils.checks`) name the key.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from retina.errors import ConfigError, first_line

# The Hydra configs, shipped inside the package (``retina/configs``); every entry point and
# test composes from here.
CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# Keys of the plain (non-``_target_``) nodes; anything else in them is a typo.
TRAIN_KEYS = frozenset(
    {
        "max_iter", "batch_size", "eval_period", "checkpoint_period", "keep_checkpoints",
        "resume", "deterministic", "seed", "device", "amp", "channels_last", "compile",
        "clip_grad_norm", "max_nonfinite", "num_workers", "log_period", "vis_images",
        "vis_score_thresh", "eval_batch_size", "resume_reset", "time_inference",
    }
)  # fmt: skip
SCHEDULE_KEYS = frozenset({"name", "steps", "gamma", "warmup_iters", "warmup_factor", "min_factor"})
OPTIM_KEYS = frozenset(
    {"base_lr", "reference_batch_size", "weight_decay", "no_decay_norm_bias", "optimizer"}
)
DATA_KEYS = frozenset(
    {
        "name", "root", "train_ann", "train_images", "val_ann", "val_images", "generator",
        "train_transforms", "val_transforms", "max_broken_fraction", "invalid_boxes",
    }
)  # fmt: skip
AMP_CHOICES = (None, "bf16", "fp16")
RESUME_RESET_CHOICES = (None, "optim")
MAX_SEED = 2**63 - 1  # torch.Generator seeds are 64-bit; the loader adds the epoch
DEVICE_CHOICES = ("auto", "cpu", "cuda")
SCHEDULE_CHOICES = ("step", "cosine")
INVALID_BOXES_CHOICES = ("drop", "error")
"""``data.invalid_boxes``: drop/clip the boxes ``retina-check-data`` warns about, or refuse."""


def _get(cfg: DictConfig, key: str) -> Any:
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(key, f"cannot resolve value ({first_line(exc)})") from None
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _has(cfg: DictConfig, key: str) -> bool:
    return OmegaConf.select(cfg, key, default="__absent__", throw_on_resolution_failure=False) != (
        "__absent__"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(cfg: DictConfig, key: str, minimum: int = 1, optional: bool = False) -> None:
    value = _get(cfg, key)
    if value is None and optional:
        return
    if not _is_int(value) or value < minimum:
        need = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(key, f"must be {need}, got {value!r}")


def _number(
    cfg: DictConfig,
    key: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> None:
    value = _get(cfg, key)
    if value is None and optional:
        return
    if not _is_number(value):
        raise ConfigError(key, f"must be a finite number, got {value!r}")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "" if low is None else f"{low} {'<' if low_open else '<='} "
        hi = "" if high is None else f" {'<' if high_open else '<='} {high}"
        raise ConfigError(key, f"must satisfy {lo}value{hi}, got {value!r}")


def _bool(cfg: DictConfig, key: str) -> None:
    value = _get(cfg, key)
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {value!r}")


def _choice(cfg: DictConfig, key: str, choices: Iterable[Any]) -> None:
    value = _get(cfg, key)
    choices = tuple(choices)
    if value not in choices:
        names = ", ".join("null" if c is None else str(c) for c in choices)
        raise ConfigError(key, f"must be one of {names}; got {value!r}")


def _known_keys(cfg: DictConfig, node: str, allowed: frozenset[str]) -> None:
    sub = cfg.get(node)
    if not isinstance(sub, DictConfig):
        return
    for key in sub.keys():
        if key not in allowed:
            raise ConfigError(f"{node}.{key}", f"unknown key (known: {', '.join(sorted(allowed))})")


def check_target_keys(cfg: DictConfig, node: str, injected: Iterable[str] = ()) -> None:
    """Check that every key of a ``_target_`` node is an argument of its target.

    Args:
        cfg: the composed config.
        node: dotted key of the node, e.g. ``"loss"``.
        injected: arguments the code passes itself (e.g. ``num_classes``); setting them in
            the config is an error too.
    """
    sub = OmegaConf.select(cfg, node)
    if not isinstance(sub, DictConfig) or "_target_" not in sub:
        return
    from hydra.utils import get_method

    target = sub["_target_"]
    try:
        fn = get_method(target)
    except Exception as exc:  # hydra wraps import errors in its own exception types
        reason = first_line(exc)
        raise ConfigError(f"{node}._target_", f"cannot import {target!r} ({reason})") from None
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    injected = set(injected)
    for key in sub.keys():
        key = str(key)
        if key.startswith("_") and key.endswith("_"):
            continue
        if key in injected:
            raise ConfigError(f"{node}.{key}", "is set by the program; remove it from the config")
        if key not in params and not takes_kwargs:
            raise ConfigError(f"{node}.{key}", f"unknown key: {target} takes no argument {key!r}")


def _check_built(cfg: DictConfig, node: str, **kwargs: Any) -> None:
    """Build ``node`` on PyTorch's meta device (no memory, no weight files, milliseconds):
    its constructors' argument checks are the only range checks, and a failing one becomes
    a :class:`ConfigError` naming ``node.<argument>``."""
    sub = OmegaConf.select(cfg, node)
    if not isinstance(sub, DictConfig) or "_target_" not in sub:
        return
    import torch

    from retina.utils.instantiate import instantiate_node

    if "weights" in sub:
        kwargs["weights"] = None  # a missing weight file is reported when really building
    with torch.device("meta"):
        instantiate_node(sub, node, **kwargs)


def _check_loss(cfg: DictConfig) -> None:
    check_target_keys(cfg, "loss")
    _check_built(cfg, "loss")


def _check_model(cfg: DictConfig) -> None:
    check_target_keys(cfg, "model", injected=("num_classes", "cls_loss"))
    _check_built(cfg, "model", num_classes=1, cls_loss=None)
    _check_freeze_at(cfg)


def _check_freeze_at(cfg: DictConfig) -> None:
    """Freezing a stage keeps its weights as they were built: with ``model.weights`` null
    they are random, which no training run wants. Refused rather than silently ignored,
    since a config that sets both asked for two incompatible things."""
    if not (_has(cfg, "model.freeze_at") and _has(cfg, "model.weights")):
        return
    freeze_at = _get(cfg, "model.freeze_at")
    if _get(cfg, "model.weights") is None and _is_int(freeze_at) and freeze_at > 0:
        raise ConfigError(
            "model.freeze_at",
            f"{freeze_at} would freeze randomly initialised stages (model.weights is null); "
            "set model.freeze_at=0 to train from scratch, or load weights (model.weights=...)",
        )


def _check_train(cfg: DictConfig) -> None:
    _known_keys(cfg, "train", TRAIN_KEYS)
    for key in ("max_iter", "batch_size", "checkpoint_period", "keep_checkpoints", "log_period",
                "max_nonfinite", "eval_batch_size"):  # fmt: skip
        if _has(cfg, f"train.{key}"):
            _int(cfg, f"train.{key}")
    for key in ("eval_period", "num_workers", "seed", "vis_images", "time_inference"):
        if _has(cfg, f"train.{key}"):
            _int(cfg, f"train.{key}", minimum=0)
    for key in ("resume", "deterministic", "channels_last", "compile"):
        if _has(cfg, f"train.{key}"):
            _bool(cfg, f"train.{key}")
    if _has(cfg, "train.seed") and _get(cfg, "train.seed") > MAX_SEED:
        raise ConfigError("train.seed", f"must be at most 2**63 - 1, got {_get(cfg, 'train.seed')}")
    if _has(cfg, "train.resume_reset"):
        _choice(cfg, "train.resume_reset", RESUME_RESET_CHOICES)
    if _has(cfg, "train.amp"):
        _choice(cfg, "train.amp", AMP_CHOICES)
    if _has(cfg, "train.device"):
        _choice(cfg, "train.device", DEVICE_CHOICES)
    if _has(cfg, "train.clip_grad_norm"):
        _number(cfg, "train.clip_grad_norm", 0.0, low_open=True, optional=True)
    if _has(cfg, "train.vis_score_thresh"):
        _number(cfg, "train.vis_score_thresh", 0.0, 1.0)


def _check_schedule(cfg: DictConfig) -> None:
    _known_keys(cfg, "schedule", SCHEDULE_KEYS)
    if not isinstance(cfg.get("schedule"), DictConfig):
        return
    _choice(cfg, "schedule.name", SCHEDULE_CHOICES)
    steps = _get(cfg, "schedule.steps")
    if not isinstance(steps, list) or not all(_is_int(s) and s > 0 for s in steps):
        raise ConfigError("schedule.steps", f"must be a list of positive iterations, got {steps!r}")
    if steps != sorted(steps):
        raise ConfigError("schedule.steps", f"must be increasing, got {steps!r}")
    _number(cfg, "schedule.gamma", 0.0, 1.0, low_open=True)
    _int(cfg, "schedule.warmup_iters", minimum=0)
    _number(cfg, "schedule.warmup_factor", 0.0, 1.0, low_open=True)
    _number(cfg, "schedule.min_factor", 0.0, 1.0)


def _check_optim(cfg: DictConfig) -> None:
    _known_keys(cfg, "optim", OPTIM_KEYS)
    if not isinstance(cfg.get("optim"), DictConfig):
        return
    _number(cfg, "optim.base_lr", 0.0, low_open=True)
    _int(cfg, "optim.reference_batch_size")
    _number(cfg, "optim.weight_decay", 0.0)
    _bool(cfg, "optim.no_decay_norm_bias")
    check_target_keys(cfg, "optim.optimizer", injected=("params", "lr"))
    if _has(cfg, "optim.optimizer.momentum"):  # torch.optim.SGD takes any value >= 0
        _number(cfg, "optim.optimizer.momentum", 0.0, 1.0, high_open=True)


def default_generated_root(cfg: DictConfig) -> Path | None:
    """The root a generated dataset (``data.generator`` set) is created at when missing."""
    if _get(cfg, "data.generator") is None or not _has(cfg, "paths.data_dir"):
        return None
    return Path(_get(cfg, "paths.data_dir")) / str(_get(cfg, "data.name"))


def _check_data(cfg: DictConfig) -> None:
    _known_keys(cfg, "data", DATA_KEYS)
    if not _has(cfg, "data.root"):
        return
    root = _get(cfg, "data.root")
    if not isinstance(root, str) or not root:
        raise ConfigError("data.root", f"must be a directory path, got {root!r}")
    generator = _get(cfg, "data.generator") if _has(cfg, "data.generator") else None
    if generator is not None:
        if not isinstance(generator, dict):
            raise ConfigError("data.generator", f"must be a mapping or null, got {generator!r}")
        for key in ("train", "val", "size", "num_classes"):
            if key in generator:
                _int(cfg, f"data.generator.{key}")
    if _has(cfg, "data.max_broken_fraction"):
        _number(cfg, "data.max_broken_fraction", 0.0, 1.0)
    if _has(cfg, "data.invalid_boxes"):
        _choice(cfg, "data.invalid_boxes", INVALID_BOXES_CHOICES)
    for node in ("data.train_transforms", "data.val_transforms"):
        check_target_keys(cfg, node)
    if Path(root).is_dir():
        return
    default = default_generated_root(cfg) if generator is not None else None
    if default is not None and Path(root).resolve() == default.resolve():
        return  # generated on first use
    if Path(root).exists():
        raise ConfigError("data.root", f"{root} is not a directory")
    raise ConfigError("data.root", f"directory {root} does not exist")


def validate_config(cfg: DictConfig) -> None:
    """Check every known node of a composed config; raise :class:`ConfigError` on the first
    bad value or unknown key."""
    _check_loss(cfg)
    _check_model(cfg)
    _check_train(cfg)
    _check_schedule(cfg)
    _check_optim(cfg)
    _check_data(cfg)

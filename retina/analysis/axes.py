"""A run's ablation settings (its "axes": γ, α, anchors, OHEM, LR, ...) as ``retina-report``
compares them, from its resolved config and its command-line overrides."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import yaml

from retina.analysis.runs import Run, split_override
from retina.utils.dotted import select

__all__ = ["AXIS_KEYS", "config_axes", "run_axes", "varying_axes"]

AXIS_KEYS: dict[str, str] = {
    "loss": "loss",
    "loss.gamma": "gamma",
    "loss.alpha": "alpha",
    "model.prior_prob": "prior_prob",
    "model.num_scales": "num_scales",
    "model.aspect_ratios": "num_ratios",
    "loss.batch_size_per_image": "ohem_batch",
    "loss.positive_fraction": "ohem_pos_fraction",
    "loss.nms_thresh": "ohem_nms",
    "optim.base_lr": "lr",
    "model.depth": "depth",
    "data.val_transforms.min_size": "scale",
    "train.seed": "seed",
    "implementation": "implementation",
}
"""Config keys (dotted) read as ablation axes, and the axis each becomes."""

_IGNORED_OVERRIDES = ("experiment", "hydra", "scale", "paths")
_NOT_SETTINGS = (
    "paths", "hydra", "train.resume", "train.resume_reset", "train.log_period",
    "train.checkpoint_period", "train.keep_checkpoints",
)
"""Config keys that differ between the jobs of one sweep by construction (the job's folder, a
rerun resuming it) or that a rerun may change (how often it logs or saves: the keys of
:data:`retina.engine.sweep.IGNORED_KEYS`), not as a setting. ``train.num_workers`` stays an
axis: a sweep over it is a speed study."""

_MISSING = object()


def _not_a_setting(key: str) -> bool:
    """Whether the dotted ``key`` is in (or under) :data:`_NOT_SETTINGS`."""
    return any(key == n or key.startswith(n + ".") for n in _NOT_SETTINGS)


_REFERENCE = re.compile(r"\$\{([\w.]+)\}")


def _resolved(config: dict[str, Any], node: Any, hops: int = 8) -> Any:
    """``node`` with each plain reference to another key of ``config`` replaced by its value
    (``${study.lr.fl}`` -> 0.04, ``${paths.data_dir}/x`` -> ``./data/x``), as an unfinished
    job's ``.hydra/config.yaml`` keeps them; ``_MISSING`` for any other interpolation
    (``${hydra:...}``, a resolver, a cycle)."""
    if not isinstance(node, str) or "${" not in node:
        return node
    if hops == 0:
        return _MISSING
    whole = _REFERENCE.fullmatch(node)
    if whole:
        return _resolved(config, select(config, whole.group(1), _MISSING), hops - 1)
    parts: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        value = _resolved(config, select(config, match.group(1), _MISSING), hops - 1)
        if value is _MISSING or isinstance(value, dict | list):
            parts.append("unresolved")
            return match.group(0)
        return str(value)

    text = _REFERENCE.sub(substitute, node)
    return _MISSING if parts or "${" in text else text


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    """The value at ``dotted`` (references followed, see :func:`_resolved`); ``_MISSING`` if
    absent or not resolvable here."""
    return _resolved(config, select(config, dotted, _MISSING))


def _axis_value(axis: str, value: Any) -> Any:
    if axis == "num_ratios" and isinstance(value, list | tuple):
        return len(value)
    if isinstance(value, int) and not isinstance(value, bool) and axis in ("gamma", "alpha"):
        return float(value)
    return value


def run_axes(run: Run) -> dict[str, Any]:
    """The run's ablation values: known axes (see :data:`AXIS_KEYS`) plus raw overrides.

    Values come from the resolved config where it has them, else from the overrides; an
    override whose key is no known axis is kept under its own key (``"seed"``, ...). A key
    set to null (``model.prior_prob=null``) is present with the value ``None``; a key the run
    does not tell is absent.
    """
    axes: dict[str, Any] = {}
    for text in run.overrides:
        key, value = split_override(text)
        if key.split(".")[0] in _IGNORED_OVERRIDES or _not_a_setting(key):
            continue  # e.g. train.resume=true on one job of a sweep: not another setting
        try:
            parsed = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            parsed = value
        axes[AXIS_KEYS.get(key, key)] = _axis_value(AXIS_KEYS.get(key, key), parsed)
    if "loss" in run.choices:
        axes["loss"] = run.choices["loss"]
    elif isinstance(_lookup(run.config, "loss._target_"), str):
        axes["loss"] = _lookup(run.config, "loss._target_").rsplit(".", 1)[-1]
    for dotted, axis in AXIS_KEYS.items():
        value = _lookup(run.config, dotted) if dotted != "loss" else _MISSING
        if value is not _MISSING:
            axes[axis] = _axis_value(axis, value)
    return axes


def varying_axes(all_axes: Sequence[dict[str, Any]]) -> list[str]:
    """The axes whose value differs between runs, in order of first appearance."""
    keys: list[str] = []
    for axes in all_axes:
        keys += [k for k in axes if k not in keys]
    varying = []
    for key in keys:
        values = {repr(a[key]) for a in all_axes if key in a}
        if len(values) > 1:
            varying.append(key)
    return varying


def _leaves(node: Any, prefix: str, out: dict[str, Any],
            root: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dotted key -> value of every leaf (lists are leaves) of the config ``root`` (default:
    ``node``), references followed; a value not resolvable here is ``_MISSING``."""
    root = node if root is None else root
    if isinstance(node, dict):
        for key, value in node.items():
            _leaves(value, f"{prefix}.{key}" if prefix else str(key), out, root)
    else:
        out[prefix] = _resolved(root, node)
    return out


def _comparable_configs(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """The runs' configs, with every model key a run's config lacks filled in by its default
    (:func:`retina.modeling.build.with_model_defaults`) when the model nodes do not all list
    the same keys: a run written before a key was listed used its default, and is the same
    setting as a newer run that lists it."""
    models = [r.config.get("model") for r in runs if r.config]
    key_sets = {frozenset(m) for m in models if isinstance(m, dict)}
    if len(key_sets) < 2:
        return [r.config for r in runs]
    from retina.modeling.build import with_model_defaults  # imports torch: only when needed

    return [{**r.config, "model": with_model_defaults(r.config["model"])}
            if isinstance(r.config.get("model"), dict) else r.config for r in runs]  # fmt: skip


def config_axes(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """Per run, the leaves of its resolved config that differ between the runs and that no
    axis of :data:`AXIS_KEYS` reads (``{"train.max_iter": 400}``), under their dotted keys.

    Runs without a config (never started) are not compared; a key that some configs lack
    differs, but a value a config cannot resolve (an interpolation of Hydra's runtime) is
    unknown there, not different. Keys in :data:`_NOT_SETTINGS` are never axes.
    """
    leaves = [_leaves(c, "", {}) if c else None for c in _comparable_configs(runs)]
    known = [x for x in leaves if x is not None]
    keys = dict.fromkeys(k for x in known for k in x)
    varying = [
        k for k in keys
        if k not in AXIS_KEYS
        and not _not_a_setting(k)
        and len({repr(x.get(k, "<absent>")) for x in known if x.get(k) is not _MISSING}) > 1
    ]
    return [{k: x[k] for k in varying if k in x and x[k] is not _MISSING}
            if x is not None else {} for x in leaves]

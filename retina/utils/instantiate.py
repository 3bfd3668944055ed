"""Building objects from config nodes: the one safe path for configs read from files.

A checkpoint or a run folder carries the config it was made with. Its ``_target_`` strings
are data from a file someone else may have written, and Hydra instantiates nested
``_target_``s recursively. So before anything is built, every ``_target_`` in such a config
must sit at a position listed in :data:`ALLOWED_TARGETS` and name one of the builders listed
there, spelled exactly: the model builder at ``model``, a loss class at ``loss``, the
transform builder at ``data.train_transforms`` / ``data.val_transforms`` and the optimizer
at ``optim.optimizer``. A ``_target_`` anywhere else (``model.pixel_mean``, inside a list,
one level deeper in a builder's arguments) is refused with one line naming the file and the
dotted key, before Hydra or any import runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from retina.errors import CheckpointError, ConfigError, first_line, one_line

_LOSSES = ("FocalLoss", "FocalLossStar", "OHEMLoss")
_TRANSFORMS = frozenset({"retina.data.build_transforms", "retina.data.transforms.build_transforms"})

ALLOWED_TARGETS: dict[str, frozenset[str]] = {
    "model": frozenset({"retina.modeling.build_retinanet",
                        "retina.modeling.build.build_retinanet"}),
    "loss": frozenset(f"retina.modeling{sub}.{name}"
                      for sub in ("", ".losses") for name in _LOSSES),
    "data.train_transforms": _TRANSFORMS,
    "data.val_transforms": _TRANSFORMS,
    # Stored with every training config; only ever built from the user's own config (a
    # resume compares it), never from a file's.
    "optim.optimizer": frozenset({"torch.optim.SGD"}),
}
"""Config position (dotted key from the config's root) -> the ``_target_``s allowed there
(each builder under its module's name and under the package name that re-exports it). The
only place that lists what a config read from a file may build."""


def check_targets(node: Any, where: str, position: str = "") -> None:
    """Refuse any ``_target_`` in ``node`` that :data:`ALLOWED_TARGETS` does not allow.

    Args:
        node: a plain mapping / list tree (a resolved config or one of its nodes).
        where: the node's name in messages, e.g. ``"ckpt.pt: config.model"``.
        position: the node's dotted key from the config's root (``"model"``; ``""`` for the
            whole config), which decides what its own and its children's ``_target_`` may be.

    Raises:
        CheckpointError: ``"<where>.<key>: refusing _target_ '<name>' ..."`` for the first
            refused target (nothing is imported or called).
    """
    _walk(node, where, position, "")


def _walk(node: Any, where: str, position: str, key: str) -> None:
    if isinstance(node, Mapping):
        target = node.get("_target_")
        if target is not None and (
            not isinstance(target, str) or target not in ALLOWED_TARGETS.get(position, ())
        ):
            at = f"{where}.{key}" if key else where
            allowed = sorted(ALLOWED_TARGETS.get(position, ()))
            here = f"allowed here: {', '.join(allowed)}" if allowed else "no _target_ allowed here"
            raise CheckpointError(f"{at}: refusing _target_ {target!r} ({here})")
        for name, value in node.items():
            child = f"{position}.{name}" if position else str(name)
            _walk(value, where, child, f"{key}.{name}" if key else str(name))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _walk(value, where, f"{position}[{i}]", f"{key}[{i}]")


def instantiate_untrusted(node: Any, where: str, position: str, what: str = "it",
                          **kwargs: Any) -> Any:
    """Instantiate a config node that came from a file (checkpoint, run folder).

    Args:
        node: a mapping (or DictConfig) with ``_target_``.
        where: the file and key it came from, e.g. ``"ckpt.pt: config.model"``; every
            message starts with it.
        position: its dotted key from the config's root (``"model"``, ``"loss"``,
            ``"data.val_transforms"``): what :data:`ALLOWED_TARGETS` allows there.
        what: what is built, for the message (``"the model"``).
        **kwargs: arguments passed to the target (``num_classes``, built parts).

    Raises:
        CheckpointError: a ``_target_`` that :data:`ALLOWED_TARGETS` does not allow there
            (nothing is imported or called), or a node the target rejects.
    """
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    check_targets(node, where, position)
    from hydra.errors import HydraException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except (HydraException, TypeError, ValueError) as err:
        reason = one_line(err)
        raise CheckpointError(f"{where}: cannot build {what} from its config ({reason})") from err


def instantiate_node(node: Any, key: str, **kwargs: Any) -> Any:
    """Instantiate a node of the user's own composed config; failures (bad argument values,
    missing weight files) become a one-line :class:`ConfigError` naming the node, or the
    node's key when a constructor's ``ValueError`` starts with ``<argument>=`` (the
    convention of :mod:`retina.utils.checks`): ``loss.gamma: must satisfy 0 <= value, got
    -0.5``."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        raise _config_error(node, key, cause, one_line(cause)) from None
    except (ValueError, FileNotFoundError) as exc:
        raise _config_error(node, key, exc, first_line(exc)) from None


_ARGUMENT = re.compile(r"^([A-Za-z_]\w*)=(.*?): (.*)$")


def _config_error(node: Any, key: str, exc: BaseException, message: str) -> ConfigError:
    """A constructor's ``ValueError("name=value: reason")`` for an argument the node sets
    becomes ``ConfigError("key.name", "reason, got value")``; anything else names ``key``."""
    match = _ARGUMENT.match(message) if isinstance(exc, ValueError) else None
    if match and isinstance(node, Mapping) and match.group(1) in node:
        name, value, reason = match.groups()
        return ConfigError(f"{key}.{name}", f"{reason}, got {value}")
    return ConfigError(key, message)

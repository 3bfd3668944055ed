"""Building objects from config nodes: the one safe path for configs read from files.

A checkpoint or a run folder carries the config it was made with. Its ``_target_`` strings
are data from a file someone else may have written, so before Hydra instantiates anything
every ``_target_`` in the node (recursively) must resolve to a callable *defined* in a retina
module. The name alone is not enough: ``retina.engine.checkpoint.os.system`` starts with
``retina.`` but resolves to ``os.system``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any

from retina.errors import CheckpointError, ConfigError, first_line, one_line


def is_retina_callable(target: object) -> bool:
    """True when ``target`` names a class or function defined inside the retina package."""
    if not isinstance(target, str):
        return False
    module_name, _, attr = target.rpartition(".")
    if not (module_name == "retina" or module_name.startswith("retina.")):
        return False
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    obj = getattr(module, attr, None)
    defined_in = getattr(obj, "__module__", None)
    return (
        callable(obj)
        and isinstance(defined_in, str)
        and (defined_in == "retina" or defined_in.startswith("retina."))
    )


def check_targets(node: Any, where: str, key: str = "") -> None:
    """Raise :class:`CheckpointError` naming ``where`` and the dotted key of the first
    ``_target_`` in ``node`` that is not a retina callable."""
    if isinstance(node, Mapping):
        target = node.get("_target_")
        if target is not None and not is_retina_callable(target):
            at = f"{where}.{key}" if key else where
            raise CheckpointError(
                f"{at}: refusing _target_ {target!r} (not a callable defined in retina)"
            )
        for name, value in node.items():
            check_targets(value, where, f"{key}.{name}" if key else str(name))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            check_targets(value, where, f"{key}[{i}]")


def instantiate_untrusted(node: Any, where: str, what: str = "it", **kwargs: Any) -> Any:
    """Instantiate a config node that came from a file (checkpoint, run folder).

    Args:
        node: a mapping (or DictConfig) with ``_target_``.
        where: the file and key it came from, e.g. ``"ckpt.pt: config.model"``; every
            message starts with it.
        what: what is built, for the message (``"the model"``).
        **kwargs: arguments passed to the target (``num_classes``, built parts).

    Raises:
        CheckpointError: a foreign ``_target_`` (nothing is imported or called beyond the
            module lookup), or a node the target rejects.
    """
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    check_targets(node, where)
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

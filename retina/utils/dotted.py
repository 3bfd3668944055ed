"""Reading a nested config (a plain dict, as saved in ``metrics.json`` or a checkpoint) by a
dotted key such as ``loss.gamma``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["select"]


def select(config: Any, dotted: str, default: Any = None) -> Any:
    """The value at ``dotted`` (``"model.num_scales"``) in nested mappings; ``default`` when a
    part is missing or a parent is not a mapping."""
    node = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node

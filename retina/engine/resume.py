"""What a resumed run keeps from its checkpoint, and what it takes from the new config.

A checkpoint restores the model, the optimizer (its LR, weight decay and momentum per
parameter group), the schedule's progress and the data position. A config change to any of
those cannot be honoured by restoring them, so a resume compares the two configs first:

- ``MUST_MATCH`` (model, loss, optimizer, LR schedule, batch size, seed): a difference stops
  the run with one line naming the keys (a run labelled with another seed would continue the
  old seed's weights and random state), unless ``train.resume_reset=optim`` asks to rebuild
  the optimizer and the schedule from the new config (``optim.*``, ``schedule.*`` and
  ``train.batch_size`` may then differ; the model, loss and seed never may).
- ``loss.backend`` (which kernels compute the focal loss: the same numbers) may differ, so
  a run started with a backend this version no longer has (``native``, ``compile``)
  resumes with ``auto``.
- ``train.max_iter`` may grow or shrink, but not below the checkpoint's iteration.
- everything else (``train.max_iter``, periods, logging, workers, device, data paths and
  augmentation) is taken from the new config.

The stored config is data from a file: its ``_target_``s must pass
:func:`retina.utils.instantiate.check_targets` (nothing in it is ever built, but a crafted
config is refused rather than compared). The data's categories are compared by
:func:`retina.engine.inference.check_label_mapping`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from retina.errors import CheckpointError, ConfigError
from retina.utils.dotted import select
from retina.utils.instantiate import check_targets

MUST_MATCH = ("model", "loss", "optim", "schedule", "train.batch_size", "train.seed")
# Inside MUST_MATCH, but free to change: how the loss is computed, not what it computes.
NUMERICALLY_EQUAL = ("loss.backend",)
RESETTABLE = {"optim": ("optim", "schedule", "train.batch_size")}
RESET_CHOICES = (None, *RESETTABLE)


def _flatten(node: Any, prefix: str) -> dict[str, Any]:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}"))
        return out or {prefix: {}}
    return {prefix: node}


def _effective(node: Any, root: str) -> Any:
    from retina.modeling.build import with_model_defaults  # imports torch

    return with_model_defaults(node) if root == "model" else node


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys under :data:`MUST_MATCH` whose values differ between two resolved
    configs (a key present in one only counts as a difference, except a model key that
    ``build_retinanet`` defaults: there the default stands in). Keys of
    :data:`NUMERICALLY_EQUAL` are never a difference."""
    changed = []
    for root in MUST_MATCH:
        a = _flatten(_effective(select(old, root), root), root)
        b = _flatten(_effective(select(new, root), root), root)
        keys = sorted(set(a) | set(b))
        changed += [
            k for k in keys
            if k not in NUMERICALLY_EQUAL and a.get(k, "<absent>") != b.get(k, "<absent>")
        ]  # fmt: skip
    return changed


def check_resume_config(
    stored: Mapping[str, Any] | None, config: Mapping[str, Any], reset: str | None, path: str
) -> list[str]:
    """Refuse a resume whose config changes what the checkpoint restores.

    Args:
        stored: the checkpoint's ``config`` (None for a checkpoint without one: not checked).
        config: this run's resolved config.
        reset: ``train.resume_reset`` (None or ``"optim"``).
        path: the checkpoint, for messages.

    Returns:
        the changed keys that ``reset`` allows (rebuilt from the new config).

    Raises:
        CheckpointError: one line naming the changed keys and how to proceed, or the dotted
            key of a ``_target_`` that is not allowed there.
    """
    if not isinstance(stored, Mapping):
        return []
    check_targets(stored, f"{path}: config")
    changed = changed_keys(stored, config)
    allowed = RESETTABLE.get(reset or "", ())
    refused = [k for k in changed if not any(k == a or k.startswith(a + ".") for a in allowed)]
    if refused:
        more = f", ... ({len(refused)} keys)" if len(refused) > 8 else ""
        shown = ", ".join(refused[:8]) + more
        can_reset = all(any(k.startswith(a) for a in RESETTABLE["optim"]) for k in refused)
        hint = (
            "add train.resume_reset=optim to rebuild the optimizer and LR schedule from the new "
            "config at the checkpoint's iteration, restore the old values, or start a new run"
            if can_reset
            else "restore the old values or start a new run in another directory"
        )
        raise CheckpointError(f"{path}: cannot resume with changed {shown}; {hint}")
    return changed


def check_resume_iteration(iteration: int, config: Mapping[str, Any], path: str) -> None:
    """A resume must not start past its end: ``train.max_iter`` below the checkpoint's
    iteration would record metrics of the longer run under the shorter label.

    Raises:
        ConfigError: ``train.max_iter: ...`` naming the checkpoint's iteration.
    """
    max_iter = select(config, "train.max_iter")
    if isinstance(max_iter, int) and not isinstance(max_iter, bool) and iteration > max_iter:
        raise ConfigError(
            "train.max_iter",
            f"{max_iter} is below the iteration {iteration} of {path}; resume with "
            f"train.max_iter>={iteration} or start a new run in another directory",
        )

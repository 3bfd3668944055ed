"""Crash-safe training checkpoints: atomic writes, rotation, validated loading.

Layout of a checkpoint directory (``<run dir>/checkpoints/``)::

    model_0001000.pt   numbered checkpoints, the last ``keep`` of them
    model_0002000.pt
    last.pt            always the newest (a hard link to it, or a copy)

A checkpoint is a plain dict (see docs/architecture.md): ``model``, ``optimizer``,
``scheduler``, ``scaler``, ``iteration``, ``rng``, ``data_position``, ``cat_ids``,
``class_names``, ``config``. It is written with ``torch.save`` and read back with
``torch.load(weights_only=True)``, so it may only hold tensors and plain Python containers
and scalars; :func:`save_checkpoint` checks that before writing anything.

Every write goes to a temporary file in the same directory, is flushed and fsynced, then
renamed over the final name with ``os.replace`` and the directory is fsynced: a crash at
any moment leaves either the old file or the new one, never a half-written one under a
checkpoint name.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from retina.errors import CheckpointError, first_line
from retina.utils.instantiate import check_targets, instantiate_untrusted
from retina.utils.io import TMP_PREFIX, atomic_write, remove_stale_temps, require_regular_file

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "find_resume_checkpoint",
    "list_checkpoints",
    "load_model_state",
    "build_model_from_checkpoint",
]

logger = logging.getLogger(__name__)

LAST_NAME = "last.pt"
_NUMBERED = re.compile(r"^model_(\d{7,})\.pt$")
_TMP_PREFIX = TMP_PREFIX
REQUIRED_KEYS = ("model", "iteration")
# Types torch.load(weights_only=True) accepts without extra allow-listing.
_PLAIN_SCALARS = (str, bytes, bytearray, int, float, bool, complex, type(None))
_TORCH_LEAVES = (torch.Tensor, torch.Size, torch.dtype, torch.device)
# Prefixes added by wrappers: DistributedDataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def checkpoint_name(iteration: int) -> str:
    """File name of the numbered checkpoint for ``iteration`` (``model_0001234.pt``)."""
    return f"model_{iteration:07d}.pt"


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """Numbered checkpoints in ``directory`` as ``(iteration, path)``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _NUMBERED.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def save_checkpoint(
    state: dict, directory: str | os.PathLike, iteration: int, keep: int = 3
) -> Path:
    """Atomically write ``state`` as ``model_{iteration:07d}.pt`` and update ``last.pt``.

    Args:
        state: checkpoint dict; must contain ``model`` (a state dict). ``iteration`` is set
            to the given value.
        directory: checkpoint directory, created if missing.
        iteration: training iteration the state belongs to (>= 0).
        keep: number of numbered checkpoints to keep (oldest deleted first); ``keep <= 0``
            keeps all. ``last.pt`` is always kept.

    Returns:
        Path of the numbered checkpoint written.

    Raises:
        CheckpointError: the model holds NaN/inf, the state holds objects that
            ``weights_only`` loading would refuse, or the write failed (disk full, read-only
            directory); the previous checkpoints are then left as they were and no temporary
            file remains.
    """
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
        raise CheckpointError(f"iteration must be a non-negative int, got {iteration!r}")
    directory = Path(directory)
    if not isinstance(state, Mapping) or not isinstance(state.get("model"), Mapping):
        raise CheckpointError(f"{directory}: checkpoint state needs a 'model' state dict")
    _check_finite(state["model"], where=f"{directory}: iteration {iteration}")
    state = {**state, "iteration": iteration}
    _check_loadable(state, "state")

    target = directory / checkpoint_name(iteration)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(directory)
        atomic_write(target, lambda f: torch.save(state, f))
        _atomic_link_or_copy(directory, target, directory / LAST_NAME)
        _fsync_dir(directory)
    except (OSError, RuntimeError) as err:  # torch.save wraps some I/O errors in RuntimeError
        reason = getattr(err, "strerror", None) or first_line(err)[:160]
        raise CheckpointError(
            f"{target}: cannot write checkpoint ({reason}); previous checkpoints left intact"
        ) from err
    if keep > 0:
        for _, old in list_checkpoints(directory)[:-keep]:
            try:
                old.unlink()
            except OSError as err:
                logger.warning("could not delete old checkpoint %s: %s", old, err)
    return target


def load_checkpoint(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    required: Iterable[str] = REQUIRED_KEYS,
) -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)`` and check its structure.

    Args:
        path: checkpoint file.
        map_location: where tensors are loaded.
        required: keys that must be present (default ``model`` and ``iteration``).

    Raises:
        CheckpointError: ``"<path>: <reason>"`` for a missing, truncated or garbage file, a
            pickle that carries code or objects other than tensors and plain containers, or
            a dict without the required keys.
    """
    path = require_regular_file(path, "checkpoint file", CheckpointError)
    _verify_crc(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read checkpoint ({err.strerror or err})") from err
    except Exception as err:  # torch raises many types for corrupt files; all mean the same
        raise CheckpointError(f"{path}: {_load_failure_reason(err)}") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds {type(state).__name__}, not dict)")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a retina checkpoint (missing key(s) {missing})")
    if "model" in state and not (
        isinstance(state["model"], Mapping)
        and all(isinstance(v, torch.Tensor) for v in state["model"].values())
    ):
        raise CheckpointError(f"{path}: 'model' is not a state dict of tensors")
    if "iteration" in state and (
        not isinstance(state["iteration"], int) or isinstance(state["iteration"], bool)
    ):
        raise CheckpointError(f"{path}: 'iteration' is not an int")
    return state


def find_resume_checkpoint(
    directory: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict] | None:
    """The newest valid checkpoint in ``directory`` (by iteration), or None if there is none.

    Corrupt or unreadable files are skipped with a logged warning naming them; ``last.pt``
    is used when it is newer than every valid numbered checkpoint (e.g. when the numbered
    ones were deleted or damaged).
    """
    directory = Path(directory)
    best: tuple[Path, dict] | None = None
    skipped = False
    for _, path in reversed(list_checkpoints(directory)):
        try:
            best = (path, load_checkpoint(path, map_location))
            break
        except CheckpointError as err:
            skipped = True
            logger.warning("skipping unusable checkpoint %s", err)
    last = directory / LAST_NAME
    if (best is None or skipped) and last.is_file():
        try:
            state = load_checkpoint(last, map_location)
        except CheckpointError as err:
            logger.warning("skipping unusable checkpoint %s", err)
        else:
            if best is None or state["iteration"] > best[1]["iteration"]:
                best = (last, state)
    return best


def load_model_state(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike
) -> None:
    """Load ``state_dict`` into ``model`` strictly, with a clear error when they do not match.

    Keys saved from a ``DistributedDataParallel`` (``module.``) or ``torch.compile``
    (``_orig_mod.``) wrapper are accepted.

    Raises:
        CheckpointError: ``"<path>: checkpoint does not match the model: ..."`` listing a few
            missing, unexpected and wrongly shaped keys.
    """
    state_dict = _strip_wrapper_prefixes(state_dict)
    expected = model.state_dict()
    # A BatchNorm's step counter, saved before its stage was frozen (FrozenBatchNorm2d has
    # none and drops it on load itself).
    state_dict = {k: v for k, v in state_dict.items()
                  if k in expected or not k.endswith(".num_batches_tracked")}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            shown = ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
            problems.append(f"{len(items)} {label} ({shown})")
    if problems:
        raise CheckpointError(
            f"{path}: checkpoint does not match the model: " + "; ".join(problems)
        )
    model.load_state_dict(state_dict, strict=True)


def build_model_from_checkpoint(
    state: Mapping[str, Any],
    path: str | os.PathLike,
    overrides: Mapping[str, Any] | None = None,
) -> torch.nn.Module:
    """Rebuild the model a checkpoint was trained with and load its weights.

    The model is instantiated from the checkpoint's resolved ``config["model"]`` (and
    ``config["loss"]``) with ``num_classes = len(cat_ids)``; pretrained-backbone ``weights``
    are not looked up, since the checkpoint holds every weight. The whole stored config must
    pass :func:`retina.utils.instantiate.check_targets` first (only the builders of
    ``ALLOWED_TARGETS``, each at its own key), so a crafted config cannot run code.

    Args:
        state: a loaded checkpoint (:func:`load_checkpoint`).
        path: its file, for messages.
        overrides: model config keys to replace, e.g. ``{"score_thresh": 0.3}``.

    Returns:
        The model (on CPU, train mode as built; callers choose device and mode).

    Raises:
        CheckpointError: no model config or label mapping, a foreign ``_target_``, a config
            the builder rejects, or weights that do not fit.
    """
    config = state.get("config")
    model_cfg = config.get("model") if isinstance(config, Mapping) else None
    if not isinstance(model_cfg, Mapping) or "_target_" not in model_cfg:
        raise CheckpointError(f"{path}: checkpoint has no model config (config.model._target_)")
    cat_ids = state.get("cat_ids")
    if not isinstance(cat_ids, (list, tuple)) or not cat_ids:
        raise CheckpointError(f"{path}: checkpoint has no label mapping (cat_ids)")
    model_cfg = dict(model_cfg)
    if "weights" in model_cfg:
        model_cfg["weights"] = None
    model_cfg.update(overrides or {})
    loss_cfg = config.get("loss")
    loss_cfg = dict(loss_cfg) if isinstance(loss_cfg, Mapping) and "_target_" in loss_cfg else None
    check_targets(config, f"{path}: config")
    check_targets(model_cfg, f"{path}: config.model", "model")
    cls_loss = None
    if loss_cfg is not None:
        loss_cfg = _upgrade_loss_config(loss_cfg, path)
        cls_loss = instantiate_untrusted(loss_cfg, f"{path}: config.loss", "loss")
    model = instantiate_untrusted(
        model_cfg, f"{path}: config.model", "model", "the model", num_classes=len(cat_ids),
        cls_loss=cls_loss,
    )
    load_model_state(model, state["model"], path)
    return model


# ---------------------------------------------------------------------------- internals


# loss.backend values of checkpoints written before the native C and torch.compile focal-loss
# backends were deleted; FocalLossStar took a backend then, too.
_DELETED_FOCAL_BACKENDS = ("native", "compile")


def _upgrade_loss_config(cfg: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """An older checkpoint's loss config, made buildable: ``backend`` ``native``/``compile``
    becomes ``auto``, FL*'s ``backend`` is dropped (one warning naming the change)."""
    backend = cfg.get("backend")
    star = str(cfg.get("_target_")).endswith(".FocalLossStar")
    if backend is None or (backend not in _DELETED_FOCAL_BACKENDS and not star):
        return cfg
    cfg = dict(cfg)
    if star:
        del cfg["backend"]
        change = f"dropped backend={backend!r} (FL* always runs the eager kernels)"
    else:
        cfg["backend"] = "auto"
        change = f"backend={backend!r} (deleted) read as 'auto'"
    logger.warning("%s: config.loss of an older version: %s", path, change)
    return cfg


def _verify_crc(path: Path) -> None:
    """Check the CRC-32 of every record of a ``torch.save`` zip archive.

    ``torch.load`` does not: a flipped bit inside the weights would load silently. Records
    written without a checksum (CRC 0) and files that are not zip archives (left to
    ``torch.load`` to judge) are skipped.
    """
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.CRC == 0 and info.file_size > 0:
                    continue
                with archive.open(info) as record:
                    while record.read(16 << 20):
                        pass
    except zipfile.BadZipFile as err:
        reason = str(err).strip() or "bad zip archive"
        raise CheckpointError(f"{path}: file is corrupt ({reason})") from err
    except (OSError, EOFError, ValueError, NotImplementedError):
        return  # unreadable as a zip: torch.load reports it


def _check_finite(model_state: Mapping[str, Any], where: str) -> None:
    bad = [
        name
        for name, value in model_state.items()
        if isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and not bool(torch.isfinite(value).all())
    ]
    if bad:
        shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise CheckpointError(f"{where}: refusing to save a model with NaN/inf in {shown}")


def _check_loadable(obj: Any, where: str) -> None:
    """Raise if ``obj`` holds anything ``torch.load(weights_only=True)`` would refuse."""
    if isinstance(obj, _TORCH_LEAVES + _PLAIN_SCALARS):
        return
    if isinstance(obj, (dict, OrderedDict)):
        for key, value in obj.items():
            _check_loadable(key, f"{where} key")
            _check_loadable(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple, set)):
        for i, value in enumerate(obj):
            _check_loadable(value, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"checkpoint {where} is a {type(obj).__module__}.{type(obj).__qualname__}, which "
        "weights_only loading refuses; store tensors or plain Python containers instead"
    )


def _atomic_link_or_copy(directory: Path, source: Path, target: Path) -> None:
    """Make ``target`` hold ``source``'s bytes atomically: a hard link, or a copy."""
    tmp_name = directory / f"{_TMP_PREFIX}{os.getpid()}_{target.name}"
    _unlink_quietly(tmp_name)
    try:
        try:
            os.link(source, tmp_name)
        except OSError:  # no hard links on this file system: copy instead
            atomic_write(target, lambda f: _copy_into(source, f))
            return
        os.replace(tmp_name, target)
    except BaseException:
        _unlink_quietly(tmp_name)
        raise


def _copy_into(source: Path, f) -> None:
    with open(source, "rb") as src:
        shutil.copyfileobj(src, f, length=16 << 20)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories; the renames still happened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quietly(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _load_failure_reason(err: Exception) -> str:
    text = str(err)
    if isinstance(err, EOFError) or not text.strip():
        return "file is empty or truncated"
    match = re.search(r"(Unsupported[^\n]*|Trying to load unsupported GLOBAL[^\n]*)", text)
    if match:
        return (
            "refused by weights_only loading, the file holds code or non-tensor objects "
            f"({match.group(1).strip().rstrip('.')})"
        )
    if "weights only load failed" in text.lower():
        return "refused by weights_only loading (not a tensor-only checkpoint)"
    if "zip archive" in text or "central directory" in text:
        return "file is truncated or corrupt (not a valid torch.save archive)"
    return f"not a valid checkpoint ({first_line(err)[:160]})"


def _strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(state_dict)
    changed = True
    while changed and out:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in out):
                out = {k[len(prefix) :]: v for k, v in out.items()}
                changed = True
    return out

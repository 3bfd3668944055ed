"""Pretrained weights by torchvision name, through torchvision's own mechanism.

``"ResNet50_Weights.IMAGENET1K_V1"`` (any name :func:`torchvision.models.get_weight` knows,
e.g. ``"RetinaNet_ResNet50_FPN_Weights.COCO_V1"``) is loaded with
``WeightsEnum.get_state_dict``, i.e. ``torch.hub.load_state_dict_from_url``: from the hub cache
(``$TORCH_HOME/hub/checkpoints/<file name of the URL>``) when the file is there, otherwise
downloaded into it with a progress bar and checked against the SHA-256 prefix in its name.
Offline, the error is one line naming the URL and the exact path to put the file at.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from retina.errors import ConfigError, first_line

__all__ = ["is_weights_file", "load_weights", "torchvision_weights", "weights_cache_path"]

_FILE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


def is_weights_file(weights: str) -> bool:
    """Whether ``weights`` names a file (a checkpoint suffix, a path separator or an existing
    path) rather than a torchvision weights name."""
    path = Path(os.path.expanduser(weights))
    return path.suffix in _FILE_SUFFIXES or os.sep in weights or path.exists()


def torchvision_weights(name: str):  # -> torchvision.models.WeightsEnum
    """The torchvision weights entry called ``name`` (``"ResNet50_Weights.IMAGENET1K_V1"``).

    Raises:
        ConfigError: ``name`` is not a torchvision weights name.
    """
    from torchvision.models import get_weight

    try:
        return get_weight(name)
    except (ValueError, KeyError, AttributeError):
        raise ConfigError(
            f"weights={name}",
            "neither an existing file nor a torchvision weights name such as "
            "'ResNet50_Weights.IMAGENET1K_V1'",
        ) from None


def weights_cache_path(name: str) -> Path:
    """Where torch hub keeps (or will download) the file of the weights called ``name``:
    ``torch.hub.get_dir()/checkpoints/<file name of its URL>`` (``$TORCH_HOME`` respected)."""
    url = torchvision_weights(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _load_file(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"weights={path}", "file not found") from None
    except Exception as err:  # noqa: BLE001 - reported as one line naming the file
        raise ConfigError(f"weights={path}", f"cannot be read ({first_line(err)})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ConfigError(f"weights={path}", f"expected a state dict, got {type(state).__name__}")
    return state


def load_weights(weights: str | os.PathLike, *, progress: bool = True) -> dict[str, Tensor]:
    """State dict of ``weights``: a local file, or a torchvision weights name.

    A name is loaded from the torch hub cache, or downloaded into it (``progress``: tqdm bar
    on stderr; the download is verified against the hash prefix in the file name, a cached
    file is used as it is, as torch hub does). Everything is read with ``weights_only=True``.

    Raises:
        ConfigError: one line: the file is missing or unreadable, the name is unknown, or the
            download failed (``"cannot download URL (reason); put the file at PATH"``).
    """
    text = os.fspath(weights)
    if is_weights_file(text):
        return _load_file(Path(os.path.expanduser(text)))
    entry = torchvision_weights(text)
    cached = weights_cache_path(text)
    if cached.is_file():
        return _load_file(cached)
    try:
        return entry.get_state_dict(progress=progress, check_hash=True, weights_only=True)
    except (OSError, RuntimeError) as err:  # URLError, refused/timed-out socket, bad hash
        if cached.is_file():  # downloaded, but not loadable
            raise ConfigError(f"weights={cached}", f"cannot be read ({first_line(err)})") from None
        reason = getattr(err, "reason", None) or err  # URLError keeps the socket error here
        reason = first_line(reason) if isinstance(reason, BaseException) else str(reason)
        raise ConfigError(
            f"weights={text}",
            f"cannot download {entry.url} ({reason}); put the file at {cached}",
        ) from None

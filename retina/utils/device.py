"""Device selection, the same for training, evaluation, prediction and the figures."""

from __future__ import annotations

import torch

from retina.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def device_type(name: str, key: str = "device") -> str:
    """``"cuda"`` or ``"cpu"`` for a device setting (``auto`` picks CUDA when available).

    Raises:
        ConfigError: an unknown name, or ``cuda`` on a machine without a CUDA device.
    """
    if name not in DEVICE_CHOICES:
        raise ConfigError(key, f"must be one of {', '.join(DEVICE_CHOICES)}; got {name!r}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(key, "cuda was asked for but no CUDA device is available")
    return name


def select_device(name: str, key: str = "device", local_rank: int = 0) -> torch.device:
    """The ``torch.device`` for a device setting; CUDA uses the process's local rank."""
    kind = device_type(name, key)
    return torch.device("cuda", local_rank) if kind == "cuda" else torch.device("cpu")

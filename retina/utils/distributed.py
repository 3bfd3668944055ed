"""The one cross-process sum, usable from any layer (modeling's loss normaliser, the trainer).

Without an initialised process group it is the identity, so single-process code reads the
same.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    """Whether a ``torch.distributed`` process group is running."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the group (1 without one)."""
    return dist.get_world_size() if is_initialized() else 1


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks (returns a new tensor; identity without a group)."""
    out = value.detach().clone()
    if is_initialized():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out

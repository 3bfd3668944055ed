"""Distributed helpers: ``torchrun`` / ``env://`` initialisation and small collectives.

Every helper also works without an initialised process group (a single process is rank 0 of
a world of size 1), so the training loop reads the same either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from retina.utils.distributed import all_reduce_sum

__all__ = [
    "DistInfo", "init_distributed", "current", "barrier", "all_reduce_sum",
    "broadcast_object", "cleanup",
]  # fmt: skip


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str = "cpu", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by ``torchrun``'s environment, if any.

    ``torchrun --nproc_per_node=N`` (or its multi-node rendezvous) sets ``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; without them the
    process runs alone. The backend is NCCL for CUDA and gloo otherwise.
    """
    if dist.is_available() and dist.is_initialized():
        return current()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    from datetime import timedelta

    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
    )
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)


def current() -> DistInfo:
    """The rank and world size of the initialised group (rank 0 of 1 when none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: object, src: int = 0) -> object:
    """Send a picklable object from ``src`` to every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

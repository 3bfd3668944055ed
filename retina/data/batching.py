"""Batching: collate, padding, aspect-ratio grouping, distributed sampling, worker seeding."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

Target = dict[str, Any]


def collate_detection(batch: Sequence[tuple[torch.Tensor, Target] | None]
                      ) -> tuple[list[torch.Tensor], list[Target]]:
    """``[(image (3,H_i,W_i), target), ...] -> (images, targets)`` lists; ``None`` items
    (broken images skipped by the dataset) are left out."""
    items = [item for item in batch if item is not None]
    return [image for image, _ in items], [target for _, target in items]


def pad_images(images: Sequence[torch.Tensor], size_divisible: int = 1, value: float = 0
               ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Stack ``(C,H_i,W_i)`` images into ``(B,C,H,W)``, padding bottom/right.

    ``H`` and ``W`` are the largest sizes rounded up to a multiple of ``size_divisible``.
    Returns the batch and each image's ``(h, w)`` before padding. (The model pads its own
    inputs; this is for tools and tests that want a dense tensor.)
    """
    if not images:
        raise ValueError("pad_images needs at least one image")
    sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
    h = -(-max(s[0] for s in sizes) // size_divisible) * size_divisible
    w = -(-max(s[1] for s in sizes) // size_divisible) * size_divisible
    first = images[0]
    batch = first.new_full((len(images), first.shape[0], h, w), value)
    for out, img in zip(batch, images, strict=True):
        out[:, : img.shape[-2], : img.shape[-1]].copy_(img)
    return batch, sizes


def aspect_ratio_group_ids(aspect_ratios: np.ndarray | Sequence[float],
                           boundaries: Sequence[float] = (1.0,)) -> np.ndarray:
    """Group id per image from width/height ratios: ``(N,)`` int64, bins split at
    ``boundaries`` (default: portrait ``w/h < 1`` -> 0, landscape or square -> 1)."""
    return np.digitize(np.asarray(aspect_ratios, dtype=np.float64), np.asarray(boundaries))


class AspectRatioGroupedBatchSampler(torch.utils.data.BatchSampler):
    """Batches whose images share an aspect-ratio group, so padding wastes little.

    Indices come from ``sampler`` in its order and are buffered per group; a batch is
    yielded as soon as its group holds ``batch_size`` indices. At the end of the sampler the
    partial groups are yielded as smaller batches, unless ``drop_last``.

    Args:
        sampler: yields dataset indices (e.g. :class:`DistributedShuffleSampler`).
        group_ids: ``(N,)`` group of every dataset index (:func:`aspect_ratio_group_ids`).
        batch_size: images per batch.
        drop_last: drop the incomplete batch of each group.
    """

    def __init__(self, sampler: Sampler[int] | Sequence[int], group_ids: Sequence[int] |
                 np.ndarray, batch_size: int, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sampler = sampler
        self.group_ids = np.asarray(group_ids, dtype=np.int64)
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = {}
        for index in self.sampler:
            group = buffers.setdefault(int(self.group_ids[index]), [])
            group.append(int(index))
            if len(group) == self.batch_size:
                yield group[:]
                group.clear()
        if not self.drop_last:
            for group in buffers.values():
                if group:
                    yield group

    def __len__(self) -> int:
        counts = np.bincount(self.group_ids[np.fromiter(self.sampler, dtype=np.int64)])
        if self.drop_last:
            return int((counts // self.batch_size).sum())
        return int((-(-counts // self.batch_size)).sum())


class DistributedShuffleSampler(Sampler[int]):
    """Seeded epoch-wise shuffling, split across ranks (works with one process too).

    Every rank draws the same permutation from ``(seed, epoch)`` and takes every
    ``world_size``-th index starting at ``rank``; the permutation is padded by wrapping
    (or truncated with ``drop_last``) so that all ranks get the same count. Call
    :meth:`set_epoch` before each epoch. ``rank``/``world_size`` default to the
    initialised ``torch.distributed`` group, else ``0``/``1``.
    """

    def __init__(self, num_samples: int, shuffle: bool = True, seed: int = 0,
                 rank: int | None = None, world_size: int | None = None,
                 drop_last: bool = False) -> None:
        dist = torch.distributed
        initialised = dist.is_available() and dist.is_initialized()
        self.world_size = world_size if world_size is not None else (
            dist.get_world_size() if initialised else 1)
        self.rank = rank if rank is not None else (dist.get_rank() if initialised else 0)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world_size {self.world_size}")
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.world_size
        return -(-self.num_samples // self.world_size)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        total = len(self) * self.world_size
        if total > self.num_samples:  # wrap so that every rank gets len(self) indices
            repeats = -(-total // max(self.num_samples, 1))
            order = order.repeat(repeats)
        order = order[:total]
        return iter(order[self.rank:total:self.world_size].tolist())


def make_generator(seed: int) -> torch.Generator:
    """A seeded CPU ``torch.Generator`` for a DataLoader's shuffling and worker seeds."""
    return torch.Generator().manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed ``random``, NumPy and the dataset's transforms
    from the worker's torch seed (itself derived from the loader's generator), so that a run
    with a seeded generator is reproducible for any number of workers."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    info = torch.utils.data.get_worker_info()
    dataset = info.dataset if info is not None else None
    transforms = getattr(dataset, "transforms", None)
    if hasattr(transforms, "set_seed"):
        transforms.set_seed(seed)

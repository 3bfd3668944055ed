"""Training batches in an order fixed by the seed, resumable at any batch, sharded over ranks.

Why not a plain ``DataLoader(shuffle=True)``: a resumed run must see exactly the batches and
the augmentations an uninterrupted run would have seen. So the order of epoch ``e`` is a
permutation drawn from ``(seed, e)``; the *global* batch (``batch_size`` images over all
processes) is cut from it and rank ``r`` takes its slice, so N processes see the same images
per step as one process with the whole batch (``DistributedSampler`` semantics without
padding); and every sample's augmentation RNG is seeded from ``(seed, epoch, image index)``,
independent of workers, ranks and where the run was interrupted. The position is the number
of batches the trainer has consumed, not the number prefetched.
"""

from __future__ import annotations

import logging
import random
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from retina.errors import ConfigError

log = logging.getLogger("retina.train")


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample's augmentations."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def epoch_batches(
    num_samples: int,
    batch_size: int,
    seed: int,
    epoch: int,
    group_ids: Sequence[int] | None = None,
) -> list[list[int]]:
    """The global batches of one epoch: a seeded permutation cut into full batches.

    With ``group_ids`` (e.g. 0 for landscape, 1 for portrait images), each batch holds one
    group only (aspect-ratio grouping, which keeps padding small); the batch is emitted when
    its group's bucket fills. Incomplete batches at the end of an epoch are dropped.
    """
    gen = torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    )
    order = torch.randperm(num_samples, generator=gen).tolist()
    if group_ids is None:
        return [
            order[i : i + batch_size] for i in range(0, num_samples - batch_size + 1, batch_size)
        ]
    buckets: dict[int, list[int]] = {}
    batches = []
    for index in order:
        bucket = buckets.setdefault(int(group_ids[index]), [])
        bucket.append(index)
        if len(bucket) == batch_size:
            batches.append(list(bucket))
            bucket.clear()
    return batches


class SeededSamples(Dataset):
    """Wraps a dataset so that item ``(index, seed)`` is loaded with all RNGs seeded.

    Python, NumPy and torch global RNGs are seeded for the duration of the call (and restored
    after it), and so is the dataset's albumentations pipeline (``transforms.set_random_seed``,
    which albumentations >= 2 uses instead of the global RNGs).
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        transforms = getattr(self.dataset, "transforms", None)
        for method in ("set_seed", "set_random_seed"):  # retina's wrapper / albumentations
            if hasattr(transforms, method):
                getattr(transforms, method)(seed)
                break
        try:
            return self.dataset[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


class _BatchOrder:
    """Infinite batch sampler for one rank, starting at ``(epoch, batch)``."""

    def __init__(self, loader: ResumableLoader, epoch: int, batch: int) -> None:
        self.loader, self.epoch, self.batch = loader, epoch, batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        ld = self.loader
        epoch, start = self.epoch, self.batch
        while True:
            batches = ld.global_batches(epoch)
            if not batches:
                raise ValueError(
                    f"train.batch_size={ld.batch_size}: larger than the {ld.num_samples} "
                    "training images (per aspect-ratio group)"
                )
            for batch in batches[start:]:
                mine = batch[ld.rank * ld.per_rank : (ld.rank + 1) * ld.per_rank]
                yield [(i, sample_seed(ld.seed, epoch, i)) for i in mine]
            epoch, start = epoch + 1, 0


class ResumableLoader:
    """Infinite iterator of this rank's training batches with a resumable position.

    Args:
        dataset: map-style dataset of ``(image, target)``.
        batch_size: global batch size over all ranks (divisible by ``world_size``).
        seed: fixes the order and the augmentations.
        collate_fn: batch collation (``collate_detection``).
        rank, world_size: this process's slice of each global batch.
        num_workers: DataLoader worker processes.
        group_ids: optional per-image group for aspect-ratio grouping.
        pin_memory: pin batches (for CUDA).
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        seed: int,
        collate_fn: Callable[[list[Any]], Any],
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        group_ids: Sequence[int] | None = None,
        pin_memory: bool = False,
    ) -> None:
        if batch_size % world_size:
            raise ValueError(
                f"train.batch_size={batch_size}: must be divisible by the {world_size} processes"
            )
        self.dataset = SeededSamples(dataset)
        self.num_samples = len(self.dataset)
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.per_rank = batch_size // world_size
        self.group_ids = None if group_ids is None else list(group_ids)
        self.collate_fn, self.num_workers, self.pin_memory = collate_fn, num_workers, pin_memory
        self.epoch, self.batch = 0, 0
        self._iter: Iterator[Any] | None = None
        self._cache: tuple[int, list[list[int]]] | None = None
        if not self.global_batches(0):
            raise ConfigError(
                "train.batch_size",
                f"{batch_size} is larger than the {self.num_samples} training images (per "
                "aspect-ratio group); lower it",
            )

    def global_batches(self, epoch: int) -> list[list[int]]:
        if self._cache is None or self._cache[0] != epoch:
            batches = epoch_batches(
                self.num_samples, self.batch_size, self.seed, epoch, self.group_ids
            )
            self._cache = (epoch, batches)
        return self._cache[1]

    def __iter__(self) -> ResumableLoader:
        return self

    def __next__(self) -> Any:
        if self._iter is None:
            # a weak reference: the DataLoader iterator holds the sampler, so a strong one
            # would put this loader in a reference cycle, and its worker processes would
            # linger until a garbage collection, then stall it for a 5 s join timeout each
            sampler = _BatchOrder(weakref.proxy(self), self.epoch, self.batch)
            self._iter = iter(
                DataLoader(
                    self.dataset,
                    batch_sampler=sampler,
                    collate_fn=self.collate_fn,
                    num_workers=self.num_workers,
                    pin_memory=self.pin_memory,
                    persistent_workers=False,
                    # its own generator, so creating workers never draws from the global RNG
                    generator=torch.Generator().manual_seed(self.seed),
                )
            )
        batch = next(self._iter)
        self.batch += 1
        if self.batch >= len(self.global_batches(self.epoch)):
            self.epoch, self.batch = self.epoch + 1, 0
        return batch

    def state_dict(self) -> dict[str, int]:
        """Position of the next batch to consume, plus what the order depends on."""
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed,
                "batch_size": self.batch_size, "num_samples": self.num_samples}  # fmt: skip

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue at a saved position (the order is recomputed from the seed). When the
        seed, batch size or dataset size changed, the run continues at the same epoch and
        about the same number of images, no longer reproducing the uninterrupted order."""
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        keys = ("seed", "batch_size", "num_samples")
        if any(state.get(k) != getattr(self, k) for k in keys):
            saved = "/".join(str(state.get(k)) for k in keys)
            now = "/".join(str(getattr(self, k)) for k in keys)
            log.warning("data order changed since the checkpoint (seed/batch_size/images %s -> "
                        "%s): resuming at epoch %d without reproducing the order",
                        saved, now, self.epoch)  # fmt: skip
            images = self.batch * int(state.get("batch_size") or self.batch_size)
            self.batch = min(images // self.batch_size, len(self.global_batches(self.epoch)))
            if self.batch >= len(self.global_batches(self.epoch)):
                self.epoch, self.batch = self.epoch + 1, 0
        self._iter = None

"""Collate, padding, aspect-ratio grouping, distributed sampling and worker seeding."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from retina.data import (
    AspectRatioGroupedBatchSampler,
    DistributedShuffleSampler,
    aspect_ratio_group_ids,
    collate_detection,
    make_generator,
    pad_images,
    seed_worker,
)


def test_collate_keeps_lists_and_drops_none():
    a = (torch.zeros(3, 4, 5, dtype=torch.uint8), {"image_id": 1})
    b = (torch.ones(3, 6, 2, dtype=torch.uint8), {"image_id": 2})
    images, targets = collate_detection([a, None, b])
    assert [im.shape for im in images] == [(3, 4, 5), (3, 6, 2)]
    assert [t["image_id"] for t in targets] == [1, 2]


def test_pad_images():
    images = [torch.ones(3, 4, 5), 2 * torch.ones(3, 6, 2)]
    batch, sizes = pad_images(images, size_divisible=4, value=-1)
    assert batch.shape == (2, 3, 8, 8) and sizes == [(4, 5), (6, 2)]
    assert torch.all(batch[0, :, :4, :5] == 1) and torch.all(batch[0, :, 4:, :] == -1)
    assert torch.all(batch[1, :, :6, :2] == 2) and torch.all(batch[1, :, :, 2:] == -1)


def test_aspect_ratio_grouping():
    groups = aspect_ratio_group_ids([0.5, 1.5, 0.75, 1.0, 2.0, 0.9, 1.2])
    assert groups.tolist() == [0, 1, 0, 1, 1, 0, 1]
    sampler = AspectRatioGroupedBatchSampler(range(7), groups, batch_size=2)
    batches = list(sampler)
    assert all(len({int(groups[i]) for i in b}) == 1 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert len(sampler) == len(batches) == 4
    dropped = AspectRatioGroupedBatchSampler(range(7), groups, batch_size=2, drop_last=True)
    assert len(list(dropped)) == len(dropped) == 3


@pytest.mark.parametrize("num_samples,world_size", [(10, 3), (9, 3), (4, 1)])
def test_distributed_sampler_partitions(num_samples, world_size):
    parts = [list(DistributedShuffleSampler(num_samples, seed=1, rank=r, world_size=world_size))
             for r in range(world_size)]
    assert len({len(p) for p in parts}) == 1
    assert set().union(*parts) == set(range(num_samples))
    assert len(parts[0]) == len(DistributedShuffleSampler(num_samples, rank=0,
                                                          world_size=world_size))


def test_distributed_sampler_epochs_and_seed():
    s = DistributedShuffleSampler(50, seed=3)
    first = list(s)
    assert list(s) == first
    s.set_epoch(1)
    assert list(s) != first and sorted(s) == list(range(50))
    assert list(DistributedShuffleSampler(50, shuffle=False)) == list(range(50))
    with pytest.raises(ValueError):
        DistributedShuffleSampler(5, rank=2, world_size=2)


class _RandomDataset(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return float(np.random.rand())


def _draw(workers):
    loader = DataLoader(_RandomDataset(), batch_size=2, shuffle=True, num_workers=workers,
                        worker_init_fn=seed_worker, generator=make_generator(5))
    return [float(x) for batch in loader for x in batch]


def test_worker_seeding_reproducible():
    first = _draw(2)
    assert _draw(2) == first
    assert len(set(first)) == len(first)  # workers draw different numbers

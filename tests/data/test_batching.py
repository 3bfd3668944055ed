"""Collate and aspect-ratio group ids (the batches themselves: tests/engine/test_trainer.py
and tests/data/test_coco.py through retina.engine.loader.ResumableLoader)."""

import torch

from retina.data import aspect_ratio_group_ids, collate_detection


def test_collate_keeps_lists_and_drops_none():
    a = (torch.zeros(3, 4, 5, dtype=torch.uint8), {"image_id": 1})
    b = (torch.ones(3, 6, 2, dtype=torch.uint8), {"image_id": 2})
    images, targets = collate_detection([a, None, b])
    assert [im.shape for im in images] == [(3, 4, 5), (3, 6, 2)]
    assert [t["image_id"] for t in targets] == [1, 2]


def test_aspect_ratio_group_ids():
    groups = aspect_ratio_group_ids([0.5, 1.5, 0.75, 1.0, 2.0, 0.9, 1.2])
    assert groups.tolist() == [0, 1, 0, 1, 1, 0, 1]
    assert aspect_ratio_group_ids([0.4, 0.8, 1.6], boundaries=(0.5, 1.5)).tolist() == [0, 1, 2]

"""Small in-memory pieces for trainer tests (a toy detection dataset, a tiny RetinaNet)."""

from __future__ import annotations

import functools

import torch

from retina.data import collate_detection
from retina.engine.loader import ResumableLoader
from retina.engine.optim import WarmupLRSchedule, build_optimizer
from retina.engine.trainer import Hook, Trainer
from retina.modeling import build_retinanet


class ToyBoxes(torch.utils.data.Dataset):
    """``n`` images of ``size`` px with 1-3 bright boxes each; a flip augmentation drawn
    from the global torch RNG (so per-sample seeding matters)."""

    transforms = None

    def __init__(self, n: int = 12, size: int = 64, num_classes: int = 2) -> None:
        self.n, self.size, self.num_classes = n, size, num_classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        gen = torch.Generator().manual_seed(index)
        image = torch.randint(0, 60, (3, self.size, self.size), generator=gen, dtype=torch.uint8)
        count = int(torch.randint(1, 4, (1,), generator=gen))
        xy = torch.randint(0, self.size - 24, (count, 2), generator=gen).float()
        wh = torch.randint(12, 24, (count, 2), generator=gen).float()
        boxes = torch.cat([xy, xy + wh], dim=1)
        labels = torch.randint(0, self.num_classes, (count,), generator=gen)
        for (x0, y0, x1, y1), c in zip(boxes.int().tolist(), labels.tolist(), strict=True):
            image[c, y0:y1, x0:x1] = 255
        if torch.rand(()) < 0.5:  # augmentation from the global RNG
            image = image.flip(-1)
            boxes = torch.stack([self.size - boxes[:, 2], boxes[:, 1],
                                 self.size - boxes[:, 0], boxes[:, 3]], dim=1)  # fmt: skip
        target = {"boxes": boxes, "labels": labels, "crowd_boxes": torch.zeros(0, 4),
                  "image_id": index, "orig_size": (self.size, self.size)}  # fmt: skip
        return image, target


def tiny_model(seed: int = 0, norm: str = "gn") -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_retinanet(num_classes=2, depth=10, norm=norm, freeze_at=0, fpn_channels=16,
                           num_convs=1, anchor_sizes=(16, 32, 64, 128, 256))  # fmt: skip


class Record(Hook):
    """Keeps ``trainer.last`` of every step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def after_step(self, trainer: Trainer) -> None:
        self.steps.append(dict(trainer.last))


def make_trainer(
    model: torch.nn.Module,
    *,
    batch_size: int = 4,
    rank: int = 0,
    world_size: int = 1,
    max_iter: int = 6,
    hooks=(),
    net: torch.nn.Module | None = None,
    **kwargs,
) -> Trainer:
    sgd = functools.partial(torch.optim.SGD, momentum=0.9)
    optimizer = build_optimizer(model, sgd, lr=0.01, weight_decay=1e-4)
    scheduler = WarmupLRSchedule(optimizer, max_iter=max_iter, steps=[4], warmup_iters=2)
    loader = ResumableLoader(ToyBoxes(), batch_size=batch_size, seed=3, rank=rank,
                             world_size=world_size, collate_fn=collate_detection)  # fmt: skip
    return Trainer(model=net if net is not None else model, optimizer=optimizer,
                   scheduler=scheduler, data=loader, device=torch.device("cpu"),
                   hooks=list(hooks), **kwargs)  # fmt: skip

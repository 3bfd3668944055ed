"""The model owns its loss normaliser: 2 processes (gloo on CPU, DistributedDataParallel),
each with half of a batch, compute the gradients of 1 process with the whole batch, for the
``batch`` and ``ema`` normalisers, with nothing renormalised outside the model.

The halves hold different numbers of foreground anchors, so a per-process normaliser would
give different gradients. Processes are forked (no second torch import), so this runs in a
few seconds and belongs to the default suite.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from retina.modeling import build_retinanet

NORMALIZERS = ("batch", "ema")
SIZE = 64


def _batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """4 images; the first two hold 1 box each, the last two 3 (unequal foreground)."""
    gen = torch.Generator().manual_seed(0)
    images, targets = [], []
    for count in (1, 1, 3, 3):
        xy = torch.randint(0, SIZE - 24, (count, 2), generator=gen).float()
        wh = torch.randint(12, 24, (count, 2), generator=gen).float()
        images.append(torch.randint(0, 255, (3, SIZE, SIZE), generator=gen, dtype=torch.uint8))
        targets.append({"boxes": torch.cat([xy, xy + wh], 1),
                        "labels": torch.randint(0, 2, (count,), generator=gen)})  # fmt: skip
    return images, targets


def _model(normalizer: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_retinanet(num_classes=2, depth=10, norm="gn", freeze_at=0, fpn_channels=8,
                           num_convs=1, anchor_sizes=(16, 32, 64, 128, 256),
                           loss_normalizer=normalizer)  # fmt: skip


def _gradients(normalizer: str, images, targets, ddp: bool) -> dict[str, torch.Tensor]:
    """Two steps (the EMA moves), then the gradients and losses of the second."""
    model = _model(normalizer).train()
    net = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        losses, stats = net(images, targets)
        sum(losses.values()).backward()
    out = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    for key, value in losses.items():  # the logged value: the mean over processes
        out[key] = value.detach().double().reshape(1)
        if ddp:
            dist.all_reduce(out[key])
            out[key] /= dist.get_world_size()
    for key, value in stats.items():  # global over processes already
        out[key] = value.reshape(1)
    return out


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        images, targets = _batch()
        half = len(images) // world
        mine = slice(rank * half, (rank + 1) * half)
        result = {n: _gradients(n, images[mine], targets[mine], ddp=True) for n in NORMALIZERS}
        if rank == 0:
            torch.save(result, out)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_compute_the_gradients_of_one(tmp_path) -> None:
    out = tmp_path / "ddp.pt"
    mp.start_processes(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True,
                       start_method="fork")  # fmt: skip
    ddp = torch.load(out, weights_only=True)
    images, targets = _batch()
    for normalizer in NORMALIZERS:
        single = _gradients(normalizer, images, targets, ddp=False)
        assert single["num_pos"].item() > 0
        assert single.keys() == ddp[normalizer].keys()
        for name, grad in single.items():
            torch.testing.assert_close(
                ddp[normalizer][name], grad.to(ddp[normalizer][name].dtype),
                rtol=1e-4, atol=1e-6, msg=f"{normalizer}: {name}",
            )  # fmt: skip


def test_the_halves_differ_in_foreground() -> None:
    """Control: the two halves have different foreground counts, so a per-process
    normaliser would not match (the parity above is not trivial)."""
    images, targets = _batch()
    counts = []
    for part in (slice(0, 2), slice(2, 4)):
        model = _model("batch").train()
        counts.append(model(images[part], targets[part]).stats["num_pos"].item())
    assert counts[0] != counts[1] and min(counts) > 0


@pytest.mark.parametrize("normalizer", NORMALIZERS)
def test_single_process_divides_by_its_count(normalizer: str) -> None:
    """Without a process group the normaliser is the local count (world size 1)."""
    images, targets = _batch()
    model = _model(normalizer).train()
    stats = model(images, targets).stats
    num_pos = int(model.assign(images, targets).foreground.sum())
    assert stats["num_pos"].item() == num_pos > 0
    if normalizer == "batch":
        assert stats["normalizer"].item() == num_pos

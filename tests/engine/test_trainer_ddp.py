"""DistributedDataParallel on 2 CPU processes (gloo) trains exactly like one process with the
same global batch: same losses at every step, same weights at the end."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from trainer_helpers import Record, make_trainer, tiny_model

from retina.engine import distributed

STEPS = 3
GLOBAL_BATCH = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    # what torchrun sets for each process
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    info = distributed.init_distributed("cpu")
    assert (info.rank, info.world_size) == (rank, world)
    try:
        model = tiny_model(norm="gn")  # GroupNorm: no per-process batch statistics
        net = torch.nn.parallel.DistributedDataParallel(model)
        record = Record()
        trainer = make_trainer(model, net=net, batch_size=GLOBAL_BATCH, rank=rank,
                               world_size=world, hooks=[record], max_iter=STEPS)  # fmt: skip
        trainer.train(0, STEPS)
        if rank == 0:
            torch.save({"steps": record.steps, "model": model.state_dict()}, out)
    finally:
        distributed.cleanup()


@pytest.mark.slow  # two spawned interpreters import torch (~20 s on an idle 2-core machine)
def test_two_processes_match_one_process(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)

    record = Record()
    single = tiny_model(norm="gn")
    make_trainer(single, batch_size=GLOBAL_BATCH, hooks=[record], max_iter=STEPS).train(0, STEPS)

    assert len(ddp["steps"]) == len(record.steps) == STEPS
    for step, (a, b) in enumerate(zip(ddp["steps"], record.steps, strict=True)):
        for key in ("loss_cls", "loss_box_reg", "num_pos"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (step, key)
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ddp["model"][name], value, rtol=1e-4, atol=1e-5, msg=name)

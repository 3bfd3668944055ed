"""A tiny RetinaNet trained for a few dozen iterations on generated shapes, its checkpoint, and
its ONNX export (once per session: tracing takes the longest)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import instantiate

from retina.data import CocoDetection, collate_detection, make_shapes_dataset
from retina.engine.checkpoint import save_checkpoint

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

REPO = Path(__file__).resolve().parents[2]
SIZE = 160  # training and val image size; the parity tests use other sizes
ITERATIONS = 30


def train_tiny(root: Path) -> Path:
    """Shapes under ``root/shapes``, ``ITERATIONS`` SGD steps of the demo's tiny model on its
    train split, saved as a checkpoint shaped like the trainer's (model, loss, data config)."""
    data_root = root / "shapes"
    make_shapes_dataset(data_root, train=24, val=12, size=SIZE, num_classes=3, workers=1)
    model_cfg = yaml.safe_load((REPO / "configs/model/retinanet_tiny.yaml").read_text())
    del model_cfg["defaults"]  # the choices only; the constructors default the rest
    loss_cfg = yaml.safe_load((REPO / "configs/loss/focal.yaml").read_text())
    data_cfg = yaml.safe_load((REPO / "configs/data/shapes.yaml").read_text())
    data_cfg.update(root=str(data_root), generator=None)
    for key in ("train_transforms", "val_transforms"):
        data_cfg[key].update(min_size=SIZE, max_size=SIZE)
    train = CocoDetection(data_root / data_cfg["train_ann"], data_root / data_cfg["train_images"])
    torch.manual_seed(0)
    model = instantiate(model_cfg, num_classes=train.num_classes, cls_loss=instantiate(loss_cfg))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loader = torch.utils.data.DataLoader(
        train, batch_size=2, shuffle=True, collate_fn=collate_detection, drop_last=True
    )
    model.train()
    step = 0
    while step < ITERATIONS:
        for images, targets in loader:
            losses = model(images, targets).losses
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            step += 1
            if step == ITERATIONS:
                break
    state = {
        "model": model.state_dict(),
        **train.label_mapping(),
        "config": {"model": model_cfg, "loss": loss_cfg, "data": data_cfg},
    }
    return save_checkpoint(state, root / "checkpoints", iteration=ITERATIONS)


@contextmanager
def made_once(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[tuple[Path, bool]]:
    """``(folder, made)``: a folder for this session's ``name``; ``made`` says whether its
    content is already there. Under pytest-xdist (``make test``) the workers share the folder
    and take turns (a file lock), so the first makes the content and the others reuse it."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield tmp_path_factory.mktemp(name), False
        return
    root = tmp_path_factory.getbasetemp().parent / name  # shared by this run's workers
    root.mkdir(exist_ok=True)
    with open(root.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield root, (root / "done").exists()
            (root / "done").touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    with made_once(tmp_path_factory, "export_tiny") as (root, made):
        if made:
            return Path((root / "checkpoint.path").read_text())
        path = train_tiny(root)
        (root / "checkpoint.path").write_text(str(path))
        return path


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    """``retina-export``'s work on the tiny checkpoint (its own parity check included)."""
    from retina.export import export_checkpoint

    out = tiny_checkpoint.parent.parent / "tiny.onnx"
    with made_once(tmp_path_factory, "export_tiny_onnx") as (_, made):
        if not made:
            export_checkpoint(str(tiny_checkpoint), "onnx", out)
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test``: ``--dist loadgroup``), every test of this folder
    that needs the trained checkpoint runs on one worker, which trains and exports it once."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    here = Path(__file__).parent
    for item in items:
        needs = {"tiny_checkpoint", "tiny_onnx"} & set(getattr(item, "fixturenames", ()))
        if needs and here in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("export_tiny"))

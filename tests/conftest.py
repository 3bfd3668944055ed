"""Session set-up shared by every test, and ``run_main``.

``run_main``: a console script's ``main()`` run in this process as the shell would run it
(its argv, exit status, stdout and stderr), without paying a fresh Python and torch import per
run. Hydra's global state, the root logger's handlers, ``HYDRA_FULL_ERROR`` (which
:func:`retina.cli.common.run_cli` sets) and torch's determinism switches (which
``train.deterministic`` sets) are put back afterwards. Tests that must kill or time a real
process use a subprocess (or the reliability suite's fork server) instead.

Without a GPU, Triton kernels (:mod:`retina.ops.focal_triton`) are tested through Triton's
interpreter on CPU tensors. The interpreter must be chosen before Triton is first imported
(torchvision imports it), so it is chosen here, before any test module is collected.
CPU code never launches Triton kernels, so nothing else changes.

The model configs extend the ``retinanet_defaults`` node, registered here for every test
that composes a config (:mod:`retina.engine.defaults`).
"""

import gc
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    # one thread per pytest-xdist worker (make test runs one worker per core), and for the
    # processes the tests start
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

from retina.engine.defaults import register_defaults  # noqa: E402

register_defaults()  # configs/model/*.yaml extend it; every test that composes needs it


@dataclass
class CliResult:
    """What a console script returned: exit status, stdout, stderr."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_main(monkeypatch, capsys) -> Callable[..., CliResult]:
    def run(main: Callable[[], object], prog: str, *args: str) -> CliResult:
        from hydra.core.global_hydra import GlobalHydra

        monkeypatch.setattr(sys, "argv", [prog, *args])
        monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        deterministic = (torch.are_deterministic_algorithms_enabled(),
                         torch.is_deterministic_algorithms_warn_only_enabled())
        benchmark = torch.backends.cudnn.benchmark
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:
            for handler in root.handlers:
                if handler not in handlers:
                    handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)
            GlobalHydra.instance().clear()
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
            torch.backends.cudnn.benchmark = benchmark
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    """Ten train and four val shapes images of 96x96, three classes (generated once per
    session; do not change them)."""
    from retina.data.shapes import make_shapes_dataset

    out = tmp_path_factory.mktemp("shapes")
    return make_shapes_dataset(out, train=10, val=4, size=96, seed=3, workers=1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-weight tiny RetinaNet checkpoint shaped like the trainer's (iteration 3, the
    label mapping, the resolved model, loss and data config), generated once per session.
    Its data config points at 4 generated 96 px shapes validation images in
    ``<checkpoint>.parents[1] / "shapes"``, resized to 128 px for the model. Do not change
    them; write next to them."""
    import yaml
    from hydra.utils import instantiate

    from retina.config import CONFIG_DIR
    from retina.data import CocoDetection, make_shapes_dataset
    from retina.engine.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("tiny_checkpoint")
    data_root = make_shapes_dataset(root / "shapes", train=0, val=4, size=96, workers=1)
    model_cfg = yaml.safe_load((CONFIG_DIR / "model/retinanet_tiny.yaml").read_text())
    del model_cfg["defaults"]  # the choices only; the constructors default the rest
    loss_cfg = yaml.safe_load((CONFIG_DIR / "loss/focal.yaml").read_text())
    data_cfg = yaml.safe_load((CONFIG_DIR / "data/shapes.yaml").read_text())
    data_cfg.update(root=str(data_root), generator=None)
    data_cfg["val_transforms"].update(min_size=128, max_size=128)  # != image size: rescaling
    dataset = CocoDetection(data_root / data_cfg["val_ann"], data_root / data_cfg["val_images"])
    torch.manual_seed(0)
    model = instantiate(model_cfg, num_classes=dataset.num_classes, cls_loss=None)
    state = {"model": model.state_dict(), **dataset.label_mapping(),
             "config": {"model": model_cfg, "loss": loss_cfg, "data": data_cfg}}
    return save_checkpoint(state, root / "checkpoints", iteration=3)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move everything the collection imported (torch, Hydra, retina, ...) out of the
    garbage collector's reach: every later collection, automatic or the explicit one after
    parsing annotations (:class:`retina.data.CocoDetection`), then scans only the objects
    the tests made instead of the whole heap (without this, collections took a tenth of the
    suite's time)."""
    gc.collect()
    gc.freeze()

"""Asking for CUDA on a machine without it: one line naming the key, exit 1, no traceback,
nothing written, for every console script that takes a device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from relhelp import CliServer, train_args

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_train_on_cuda_without_a_gpu(cli: CliServer, tiny_shapes: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = train_args(tiny_shapes, run_dir, **{"train.device": "cuda"})
    line = cli.run("retina-train", args, cwd=tmp_path).assert_clean_error(
        "train.device", "no CUDA device"
    )
    assert line.count("train.device") == 1
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists()


@pytest.mark.parametrize(("prog", "key"), [("retina-eval", "eval.device"),
                                           ("retina-predict", "device")])  # fmt: skip
def test_eval_and_predict_on_cuda_without_a_gpu(
    prog: str, key: str, cli: CliServer, tmp_path: Path
) -> None:
    ckpt = tmp_path / "missing.pt"  # the device is checked before anything is read
    argv = [f"checkpoint={ckpt}", f"{key}=cuda", f"hydra.run.dir={tmp_path / 'out'}"]
    if prog == "retina-predict":
        argv += [f"input={tmp_path}", f"output={tmp_path / 'pred'}"]
    cli.run(prog, argv, cwd=tmp_path).assert_clean_error(key, "no CUDA device")

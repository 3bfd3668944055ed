"""The Triton kernel check (retina.ops.focal_triton_check, scripts/check_triton.py): passes on
the real kernels, names a kernel that disagrees with the reference, and skips without CUDA.

Without a GPU the kernels run on CPU tensors through Triton's interpreter (tests/conftest.py).
"""

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from retina.ops import focal_triton
from retina.ops.focal_triton_check import TRAIN_STEP_ANCHORS, check_triton

pytestmark = pytest.mark.skipif(not focal_triton.available(), reason="Triton is not installed")
CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_triton.py"


@pytest.fixture(autouse=True)
def kernels_run():
    if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU and Triton's interpreter was not enabled before Triton's import")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_real_kernels_pass(dtype):
    assert check_triton(300, 7, dtype, DEVICE, chunk_rows=128) == []


def test_a_wrong_gradient_is_named(monkeypatch):
    real = focal_triton.labels_backward
    monkeypatch.setattr(focal_triton, "labels_backward", lambda *a: real(*a) * 1.001)
    problems = check_triton(200, 5, torch.float32, DEVICE, chunk_rows=64)
    assert len(problems) == 1
    assert problems[0].startswith("200x5 float32 labels gradient: ")


def test_a_wrong_sum_and_nan_are_named(monkeypatch):
    real = focal_triton.dense_forward

    def off(x, t, alpha, gamma, reduce_sum):
        out = real(x, t, alpha, gamma, reduce_sum)
        return out * 1.001 if reduce_sum else out.index_fill(0, torch.tensor([3]), float("nan"))

    monkeypatch.setattr(focal_triton, "dense_forward", off)
    problems = check_triton(200, 5, torch.float32, DEVICE, chunk_rows=64)
    assert [p.split(":")[0] for p in problems] == [
        "200x5 float32 dense loss",
        "200x5 float32 dense summed loss",
    ]
    assert "5 of 1000 elements" in problems[0]


def test_train_step_shape():
    assert TRAIN_STEP_ANCHORS == 3_781_008  # 16 images at 800x1333, padded to 896x1408


def _script():
    spec = importlib.util.spec_from_file_location("check_triton", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(CUDA, reason="the skip line is for machines without CUDA")
def test_script_skips_without_cuda(capsys):
    assert _script().main([]) == 0
    assert capsys.readouterr().out.startswith("check_triton: skipped: no CUDA device")


@pytest.mark.skipif(not CUDA, reason="needs a GPU")
def test_script_passes_on_the_gpu(capsys):
    assert _script().main(["--anchors", "70000", "--classes", "80"]) == 0
    out = capsys.readouterr().out
    assert out.count("check_triton: ok: 70000x80") == 2

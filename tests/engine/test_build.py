"""retina.engine.build: what train.compile compiles; the Triton kernel check at start-up."""

import os

import pytest
import torch
from trainer_helpers import tiny_model

from retina.engine.build import check_focal_kernels, wrap_model
from retina.engine.distributed import DistInfo
from retina.errors import ConfigError
from retina.ops import focal_triton, focal_triton_check


def test_compile_compiles_the_dense_part_in_place():
    model = tiny_model()
    names = [name for name, _ in model.named_parameters()]
    net = wrap_model(model, torch.device("cpu"), DistInfo(), compile=True)
    assert net is model  # no wrapper: parameter names and checkpoints are unchanged
    assert [name for name, _ in net.named_parameters()] == names
    for part in (model.backbone, model.fpn, model.head):
        assert part._compiled_call_impl is not None
    assert model._compiled_call_impl is None  # matching, loss, postprocess stay eager


def test_no_compile_leaves_the_model_alone():
    model = tiny_model()
    assert wrap_model(model, torch.device("cpu"), DistInfo(), compile=False) is model
    assert model.backbone._compiled_call_impl is None


def test_a_triton_run_checks_its_kernels_first(monkeypatch):
    """Start-up check of a run whose loss runs the Triton kernels: float32 and the AMP dtype
    at the run's classes; a mismatch stops the run naming loss.backend; eager: no check."""
    calls = []

    def check(rows, num_classes, dtype, device):
        calls.append((num_classes, dtype))
        return [] if dtype == torch.float32 else ["4096x5 bfloat16 labels gradient: 3 of ..."]

    monkeypatch.setattr(focal_triton_check, "check_triton", check)
    check_focal_kernels("eager", 5, torch.bfloat16, torch.device("cpu"))
    assert calls == []
    check_focal_kernels("triton", 5, None, torch.device("cpu"))
    assert calls == [(5, torch.float32)]
    with pytest.raises(ConfigError, match=r"^loss.backend: the Triton .*bfloat16 labels gradient"):
        check_focal_kernels("triton", 5, torch.bfloat16, torch.device("cpu"))
    assert calls[1:] == [(5, torch.float32), (5, torch.bfloat16)]


@pytest.mark.skipif(
    not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
    reason="no GPU and no Triton interpreter",
)
def test_the_start_up_check_catches_a_broken_kernel(monkeypatch):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_focal_kernels("triton", 3, None, device, rows=64)
    real = focal_triton.labels_forward
    monkeypatch.setattr(focal_triton, "labels_forward", lambda *a: real(*a) * 2)
    with pytest.raises(ConfigError, match="loss.backend"):
        check_focal_kernels("triton", 3, None, device, rows=64)

"""Backend selection of the focal kernels: an argument, validated, resolved per device; the
eager kernels' row chunking."""

import pytest
import torch

from retina.ops import (
    focal_backend,
    focal_triton,
    sigmoid_focal_loss,
    sigmoid_focal_loss_from_labels,
)


def _loss_and_grad(x, t, labels):
    x = x.clone().requires_grad_()
    a = sigmoid_focal_loss(x, t, 0.25, 2.0, "sum", backend="eager")
    b = sigmoid_focal_loss_from_labels(x, labels, 0.25, 2.0, "none", backend="eager")
    (g,) = torch.autograd.grad(a + b.sum(), x)
    return a, b, g


def test_eager_chunks_equal_one_pass(monkeypatch):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 7, generator=g, dtype=torch.float64)
    t = (torch.rand(300, 7, generator=g) < 0.2).double()
    labels = torch.randint(-2, 7, (300,), generator=g)
    whole = _loss_and_grad(x, t, labels)
    monkeypatch.setattr(focal_backend, "EAGER_CHUNK_NUMEL", 64)
    chunked = _loss_and_grad(x, t, labels)
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["native", "compile", "fast", ""])
def test_unknown_backend_is_rejected(name):
    with pytest.raises(ValueError, match=f"backend={name!r}"):
        focal_backend.check_backend(name)
    with pytest.raises(ValueError, match="backend"):
        focal_backend.resolved_backend(name, "cuda")


def test_triton_backend_needs_triton(monkeypatch):
    monkeypatch.setattr(focal_triton, "triton", None)
    with pytest.raises(ValueError, match="backend='triton': Triton is not installed"):
        focal_backend.check_backend("triton")
    assert focal_backend.resolved_backend("auto", "cuda") == "eager"


def test_resolved_backend_names_what_runs():
    triton = "triton" if focal_triton.available() else "eager"
    assert focal_backend.resolved_backend("auto", "cuda") == triton
    assert focal_backend.resolved_backend("eager", "cuda") == "eager"
    for name in ("auto", "eager") + (("triton",) if focal_triton.available() else ()):
        assert focal_backend.resolved_backend(name, "cpu") == "eager"


def test_only_cuda_tensors_reach_triton():
    x = torch.zeros(4, 3)
    for name in focal_backend.BACKENDS:
        assert focal_backend.fused_module(x, name) is None
    if torch.cuda.is_available() and focal_triton.available():
        xc = x.cuda()
        assert focal_backend.fused_module(xc, "triton") is focal_triton
        assert focal_backend.fused_module(xc, "eager") is None

"""Backend selection of the focal kernels: eager chunking, compiler fallback, compiled parity."""

import pytest
import torch

from retina.ops import focal_backend, sigmoid_focal_loss, sigmoid_focal_loss_from_labels


@pytest.fixture
def backend():
    before = focal_backend.get_backend()
    yield focal_backend
    focal_backend.set_backend(before)
    focal_backend._state["broken"] = False


def _loss_and_grad(x, t, labels):
    x = x.clone().requires_grad_()
    a = sigmoid_focal_loss(x, t, 0.25, 2.0, "sum")
    b = sigmoid_focal_loss_from_labels(x, labels, 0.25, 2.0, "none")
    (g,) = torch.autograd.grad(a + b.sum(), x)
    return a, b, g


def test_eager_chunks_equal_one_pass(backend, monkeypatch):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 7, generator=g, dtype=torch.float64)
    t = (torch.rand(300, 7, generator=g) < 0.2).double()
    labels = torch.randint(-2, 7, (300,), generator=g)
    backend.set_backend("eager")
    whole = _loss_and_grad(x, t, labels)
    monkeypatch.setattr(focal_backend, "EAGER_CHUNK_NUMEL", 64)
    chunked = _loss_and_grad(x, t, labels)
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_compiler_failure_falls_back_to_eager(backend, monkeypatch):
    def broken(fn):
        def run(*args):
            raise RuntimeError("no compiler here")

        return run

    monkeypatch.setattr(focal_backend, "_compiled_version", broken)
    backend.set_backend("compile")
    x = torch.randn(20, 3, dtype=torch.float64)
    t = torch.zeros(20, 3, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="using eager kernels"):
        out = sigmoid_focal_loss(x, t, reduction="sum")
    backend.set_backend("eager")
    torch.testing.assert_close(out, sigmoid_focal_loss(x, t, reduction="sum"))


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        focal_backend.set_backend("fast")


@pytest.mark.slow
def test_compiled_kernels_match_eager(backend):
    g = torch.Generator().manual_seed(1)
    x = 3 * torch.randn(257, 11, generator=g)
    t = (torch.rand(257, 11, generator=g) < 0.2).float()
    labels = torch.randint(-2, 11, (257,), generator=g)
    backend.set_backend("eager")
    eager = _loss_and_grad(x, t, labels)
    backend.set_backend("compile")
    compiled = _loss_and_grad(x, t, labels)
    assert not focal_backend._state["broken"]
    for a, b in zip(eager, compiled, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_auto_runs_eager_without_compiling(backend, monkeypatch):
    def refuse(fn):
        raise AssertionError("auto must not compile")

    monkeypatch.setattr(focal_backend, "_compiled_version", refuse)
    backend.set_backend("auto")
    x = torch.randn(64, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(-2, 5, (64,))
    sigmoid_focal_loss_from_labels(x, labels).backward()
    assert torch.isfinite(x.grad).all() and not focal_backend._state["broken"]

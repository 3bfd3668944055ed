"""The focal-loss backend is an argument of the loss object (``loss.backend``), passed at
construction and handed to the kernels of the forward *and* the backward; nothing else (no
process-wide switch, no environment variable) decides it."""

from __future__ import annotations

import pytest
import torch

from retina.modeling.losses import FocalLoss, FocalLossStar, OHEMLoss
from retina.ops import focal, focal_triton

needs_triton = pytest.mark.skipif(not focal_triton.available(), reason="Triton is not installed")


def _inputs():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2 * 50, 3, generator=g, requires_grad=True)
    labels = torch.randint(-2, 3, (2 * 50,), generator=g)
    return logits, labels


@pytest.mark.parametrize("cls", [FocalLoss, OHEMLoss])
def test_backend_is_an_argument_and_is_validated(cls):
    assert cls().backend == "auto"
    assert cls(backend="eager").backend == "eager"
    for name in ("fast", "native", "compile"):
        with pytest.raises(ValueError, match=f"backend={name!r}"):
            cls(backend=name)


def test_focal_loss_star_has_no_backend():
    with pytest.raises(TypeError):
        FocalLossStar(backend="eager")


@pytest.fixture
def dispatch(monkeypatch):
    """Records the backend of every kernel dispatch (forward and backward)."""
    seen: list[str] = []
    real = focal.fused_module

    def spy(x, backend):
        seen.append(backend)
        return real(x, backend)

    monkeypatch.setattr(focal, "fused_module", spy)
    return seen


@needs_triton
@pytest.mark.parametrize("per_image", [False, True])
def test_each_loss_passes_its_own_backend_to_forward_and_backward(dispatch, per_image):
    """Two losses with different backends, interleaved: each call's forward and backward
    dispatch with that loss's backend (no state carried from one to the other)."""
    logits, labels = _inputs()
    eager, triton = FocalLoss(backend="eager"), FocalLoss(backend="triton")
    for loss_fn, name in ((triton, "triton"), (eager, "eager"), (triton, "triton")):
        dispatch.clear()
        loss = loss_fn(logits, labels, 2, per_image=per_image).sum()
        forwards = len(dispatch)
        loss.backward()
        assert forwards >= 1 and len(dispatch) == 2 * forwards
        assert set(dispatch) == {name}
    dispatch.clear()
    OHEMLoss(batch_size_per_image=8, backend="triton")(
        logits, labels, 2, anchors=torch.rand(50, 2).repeat(1, 2).cumsum(1)
    ).backward()
    assert set(dispatch) == {"triton"}


def test_environment_variable_does_not_decide(monkeypatch, dispatch):
    monkeypatch.setenv("RETINA_FOCAL_BACKEND", "triton")
    loss = FocalLoss(backend="eager")
    assert loss.backend == "eager"
    logits, labels = _inputs()
    loss(logits, labels, 2).backward()
    assert set(dispatch) == {"eager"}


def test_backends_agree_on_cpu():
    """On CPU tensors every backend runs the eager kernels: the same values."""
    logits, labels = _inputs()
    results = []
    for name in ("auto", "eager"):
        loss = FocalLoss(backend=name)(logits, labels, 2)
        (grad,) = torch.autograd.grad(loss, logits)
        results.append((loss, grad))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)

"""The focal-loss backend is an argument of the loss (``loss.backend``): it decides which
kernels run in the forward *and* the backward, and ``$RETINA_FOCAL_BACKEND`` overrides it."""

from __future__ import annotations

import pytest
import torch

from retina.modeling.losses import FocalLoss, FocalLossStar, OHEMLoss
from retina.ops import focal_backend, focal_native


def _inputs():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2 * 50, 3, generator=g, requires_grad=True)
    labels = torch.randint(-2, 3, (2 * 50,), generator=g)
    return logits, labels


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(focal_backend.ENV_VAR, raising=False)


@pytest.mark.parametrize("cls", [FocalLoss, FocalLossStar, OHEMLoss])
def test_backend_is_an_argument_and_is_validated(cls, no_env):
    assert cls().backend == "auto"
    assert cls(backend="eager").backend == "eager"
    with pytest.raises(ValueError, match="backend='fast'"):
        cls(backend="fast")


def test_environment_overrides_the_argument(monkeypatch):
    monkeypatch.setenv(focal_backend.ENV_VAR, "eager")
    assert FocalLoss(backend="native").backend == "eager"
    monkeypatch.setenv(focal_backend.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="RETINA_FOCAL_BACKEND='bogus'"):
        FocalLoss()


@pytest.mark.skipif(not focal_native.available(), reason="no C compiler")
def test_eager_loss_never_runs_native_kernels_and_matches_native(no_env, monkeypatch):
    logits, labels = _inputs()
    native = FocalLoss(backend="native")
    loss_n = native(logits, labels, 2)
    (grad_n,) = torch.autograd.grad(loss_n, logits)

    def refuse(*args, **kwargs):
        raise AssertionError("native kernel called under backend='eager'")

    for name in ("labels_forward_backward", "labels_forward", "labels_backward"):
        monkeypatch.setattr(focal_native, name, refuse)
    eager = FocalLoss(backend="eager")
    loss_e = eager(logits, labels, 2)
    (grad_e,) = torch.autograd.grad(loss_e, logits)
    torch.testing.assert_close(loss_e, loss_n, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_e, grad_n, rtol=1e-5, atol=1e-6)


def test_backward_runs_under_the_forward_backend(no_env, monkeypatch):
    """autograd calls the backward after the loss's use_backend() ended; it must still use
    the loss's backend (here: compile, recorded instead of compiled)."""
    compiled: list[str] = []

    def record(fn):
        compiled.append(fn.__name__)
        return fn

    monkeypatch.setattr(focal_backend, "_compiled_version", record)
    before = focal_backend.get_backend()
    focal_backend.set_backend("eager")
    try:
        logits, labels = _inputs()
        loss = FocalLossStar(backend="compile")(logits, labels, 2)
        assert compiled == ["focal_star_forward"]
        loss.backward()
        assert compiled == ["focal_star_forward", "focal_star_backward"]
        assert focal_backend.get_backend() == "eager"  # the process default is untouched
    finally:
        focal_backend.set_backend(before)


def test_resolved_backend_names_what_runs():
    expected = "native" if focal_native.available() else "eager"
    assert focal_backend.resolved_backend("auto", "cpu") == expected
    assert focal_backend.resolved_backend("eager", "cpu") == "eager"

"""The Triton focal-loss kernels against torchvision and the float64 reference.

On a CUDA machine the kernels run compiled on the GPU, and the public functions are checked
to take them. Elsewhere the same kernels run on CPU tensors through Triton's interpreter
(``TRITON_INTERPRET=1``, set by tests/conftest.py).
"""

import os

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss as tv_sigmoid_focal_loss

from retina.ops import focal_triton as ft_module
from retina.ops import sigmoid_focal_loss, sigmoid_focal_loss_from_labels
from retina.ops.focal_reference import sigmoid_focal_loss_reference

pytestmark = pytest.mark.skipif(not ft_module.available(), reason="Triton is not installed")

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)
ALPHAS = (None, 0.25, 0.75)


@pytest.fixture(scope="module")
def ft():
    """The kernels: compiled on CUDA, interpreted on CPU (tests/conftest.py)."""
    if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU and Triton's interpreter was not enabled before Triton's import")
    return ft_module


def _inputs(n=67, k=11, scale=4.0, soft=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(n, k, generator=g)
    t = torch.rand(n, k, generator=g)
    t = t if soft else (t < 0.2).float()
    labels = torch.randint(-2, k, (n,), generator=g)
    labels[:3] = torch.tensor([-2, -1, 0])
    return x.to(DEVICE), t.to(DEVICE), labels.to(DEVICE)


def _reference(x, t, alpha, gamma):
    """Float64 loss and gradient of the readable formula."""
    xr = x.double().requires_grad_()
    loss = sigmoid_focal_loss_reference(xr, t.double(), alpha, gamma)
    (grad,) = torch.autograd.grad(loss.sum(), xr)
    return loss.detach(), grad


def _onehot(labels, k):
    t = torch.zeros(labels.shape[0], k, dtype=torch.float64, device=labels.device)
    pos = labels >= 0
    t[pos, labels[pos]] = 1.0
    return t


def _close(a, b, rtol=2e-5, atol=1e-6):
    torch.testing.assert_close(a.double().cpu(), b.double().cpu(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("soft", [False, True])
def test_dense_matches_float64_reference(ft, gamma, alpha, soft):
    x, t, _ = _inputs(soft=soft, seed=1)
    ref_loss, ref_grad = _reference(x, t, alpha, gamma)
    _close(ft.dense_forward(x, t, alpha, gamma, False), ref_loss)
    _close(ft.dense_forward(x, t, alpha, gamma, True), ref_loss.sum(), rtol=1e-5)
    upstream = torch.rand_like(x)
    _close(ft.dense_backward(x, t, alpha, gamma, torch.tensor(2.0)), 2 * ref_grad)
    _close(ft.dense_backward(x, t, alpha, gamma, upstream), upstream.double() * ref_grad)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_labels_match_one_hot_reference(ft, gamma, alpha):
    x, _, labels = _inputs(n=53, k=80, seed=2)
    keep = (labels >= -1).double()[:, None]
    ref_loss, ref_grad = _reference(x, _onehot(labels, 80), alpha, gamma)
    ref_loss, ref_grad = ref_loss * keep, ref_grad * keep
    _close(ft.labels_forward(x, labels, alpha, gamma, False), ref_loss)
    _close(ft.labels_forward(x, labels, alpha, gamma, True), ref_loss.sum(), rtol=1e-5)
    upstream = torch.rand_like(x)
    _close(ft.labels_backward(x, labels, alpha, gamma, torch.tensor(0.5)), 0.5 * ref_grad)
    _close(ft.labels_backward(x, labels, alpha, gamma, upstream), upstream.double() * ref_grad)
    assert ft.labels_forward(x, labels, alpha, gamma, True).dtype == torch.float64


def test_half_precision_is_computed_in_float32(ft):
    x, _, labels = _inputs(n=40, k=16, seed=3)
    ref_loss, ref_grad = _reference(x.bfloat16().float(), _onehot(labels, 16), 0.25, 2.0)
    ref_loss = ref_loss * (labels >= -1).double()[:, None]
    for dtype in (torch.float16, torch.bfloat16):
        xh = x.to(dtype)
        _close(ft.labels_forward(xh, labels, 0.25, 2.0, True), ref_loss.sum(), rtol=2e-2)
        grad = ft.labels_backward(xh, labels, 0.25, 2.0, torch.tensor(1.0))
        assert grad.dtype == dtype and torch.isfinite(grad).all()


def test_extremes_ignored_rows_and_nan(ft):
    x = torch.tensor([[1e4, -1e4, 0.0, 88.0, -88.0, 30.0, -30.0, 1e-20]] * 3, device=DEVICE)
    x[2, 3] = float("nan")
    labels = torch.tensor([2, 5, -2], device=DEVICE)
    loss = ft.labels_forward(x, labels, 0.25, 2.0, False)
    grad = ft.labels_backward(x, labels, 0.25, 2.0, torch.tensor(1.0))
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert (loss[2] == 0).all() and (grad[2] == 0).all()  # ignored row, NaN and all
    x[1, 4] = float("nan")
    assert ft.labels_forward(x, labels, 0.25, 2.0, False)[1, 4].isnan()
    t = torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.5]], device=DEVICE)
    ref_loss, ref_grad = _reference(x[:1], t, 0.25, 2.0)
    _close(ft.dense_forward(x[:1], t, 0.25, 2.0, False), ref_loss, rtol=1e-5, atol=1e-30)
    _close(ft.dense_backward(x[:1], t, 0.25, 2.0, torch.tensor(1.0)), ref_grad, atol=1e-30)


def test_empty_inputs(ft):
    x = torch.empty(0, 80, device=DEVICE)
    labels = torch.empty(0, dtype=torch.int64, device=DEVICE)
    assert ft.labels_forward(x, labels, 0.25, 2.0, True).item() == 0
    assert ft.labels_backward(x, labels, 0.25, 2.0, torch.tensor(1.0)).shape == (0, 80)
    assert ft.dense_forward(x, x, 0.25, 2.0, True).item() == 0


def test_supports_only_cuda_floating_tensors():
    assert not ft_module.supports(torch.zeros(2))
    if CUDA:
        assert ft_module.supports(torch.zeros(2, device="cuda", dtype=torch.bfloat16))
        assert not ft_module.supports(torch.zeros(2, device="cuda", dtype=torch.float64))


@pytest.mark.skipif(not CUDA, reason="needs a GPU")
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", [-1.0, 0.25])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_public_functions_on_cuda_match_torchvision(gamma, alpha, reduction, monkeypatch):
    calls = []
    real = ft_module.labels_backward
    monkeypatch.setattr(ft_module, "labels_backward", lambda *a: calls.append(1) or real(*a))
    x, t, labels = _inputs(n=301, k=80, seed=4)
    keep = labels >= -1
    xr = x.clone().requires_grad_()
    loss = sigmoid_focal_loss_from_labels(xr, labels, alpha, gamma, reduction, backend="triton")
    loss.sum().backward()
    xt = x.double().requires_grad_()  # float32 torchvision: NaN gradients for gamma < 1
    ref = tv_sigmoid_focal_loss(xt[keep], _onehot(labels, 80)[keep], alpha, gamma, reduction)
    ref.sum().backward()
    if reduction == "none":
        _close(loss[keep], ref)
    else:
        _close(loss, ref, rtol=1e-5)
    _close(xr.grad, xt.grad)
    assert calls  # the Triton backward ran
    xr = x.clone().requires_grad_()
    sigmoid_focal_loss(xr, t, alpha, gamma, reduction, backend="triton").sum().backward()
    xt = x.double().requires_grad_()
    tv_sigmoid_focal_loss(xt, t.double(), alpha, gamma, reduction).sum().backward()
    _close(xr.grad, xt.grad)

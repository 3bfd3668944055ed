"""Extreme logits, half precision and argument validation of the focal-loss family."""

import pytest
import torch

from retina.ops import (
    focal_loss_star,
    sigmoid_focal_loss,
    sigmoid_focal_loss_from_labels,
)
from retina.ops.focal_reference import sigmoid_focal_loss_reference

EXTREME = torch.tensor([-1e4, -100.0, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0, 1e4])


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_finite_loss_and_gradient_at_extreme_logits(gamma):
    x = EXTREME.repeat(3, 1).clone().requires_grad_()
    t = torch.tensor([0.0, 1.0, 0.5])[:, None].expand_as(x).contiguous()
    labels = torch.tensor([-1, 0, 3])
    for fn in (
        lambda: sigmoid_focal_loss(x, t, 0.25, gamma, "sum"),
        lambda: sigmoid_focal_loss_from_labels(x, labels, 0.25, gamma, "sum"),
        lambda: focal_loss_star(x, t, max(gamma, 1.0), 0.5, "sum"),
    ):
        loss = fn()
        (grad,) = torch.autograd.grad(loss, x)
        assert torch.isfinite(loss) and bool(torch.isfinite(grad).all())


def test_saturated_values_are_exact():
    x = EXTREME.double()
    ones = torch.ones_like(x)
    # A confident correct positive has ~zero loss; a confident wrong one has ~alpha * |x|.
    loss = sigmoid_focal_loss(x, ones, alpha=0.25, gamma=2.0)
    assert loss[-1].item() == 0.0
    torch.testing.assert_close(loss[0], torch.tensor(0.25 * 1e4, dtype=torch.float64))
    # At x = 30, 1 - sigmoid(x) loses 13 digits in float64; the fused kernel keeps them all.
    e = torch.exp(torch.tensor(-30.0, dtype=torch.float64))
    exact = 0.25 * (e / (1 + e)) ** 2 * torch.log1p(e)
    torch.testing.assert_close(loss[6], exact, rtol=1e-14, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_computed_in_float32(dtype):
    g = torch.Generator().manual_seed(0)
    x = (4 * torch.randn(50, 8, generator=g)).to(dtype).requires_grad_()
    t = (torch.rand(50, 8, generator=g) < 0.2).to(dtype)
    loss = sigmoid_focal_loss(x, t, reduction="none")
    assert loss.dtype == dtype
    x32 = x.detach().float().requires_grad_()
    ref = sigmoid_focal_loss_reference(x32, t.float(), 0.25, 2.0, "none")
    torch.testing.assert_close(loss, ref.to(dtype))
    (grad,) = torch.autograd.grad(loss.sum(), x)
    (grad32,) = torch.autograd.grad(ref.sum(), x32)
    assert grad.dtype == dtype
    torch.testing.assert_close(grad, grad32.to(dtype))
    labels = torch.randint(-2, 8, (50,), generator=g)
    total = sigmoid_focal_loss_from_labels(x, labels)
    assert total.dtype == dtype and torch.isfinite(total)


def test_invalid_arguments_raise_value_error_naming_them():
    x = torch.randn(4, 3)
    t = torch.zeros(4, 3)
    labels = torch.tensor([0, -1, -2, 2])
    cases = [
        (lambda: sigmoid_focal_loss(x, t, gamma=-1.0), "gamma"),
        (lambda: sigmoid_focal_loss(x, t, alpha=1.5), "alpha"),
        (lambda: sigmoid_focal_loss(x, t, alpha=float("nan")), "alpha"),
        (lambda: sigmoid_focal_loss(x, t, reduction="avg"), "reduction"),
        (lambda: sigmoid_focal_loss(x, t, backend="native"), "backend"),
        (lambda: sigmoid_focal_loss_from_labels(x, labels, backend="compile"), "backend"),
        (lambda: sigmoid_focal_loss(x, t[:, :2]), "targets"),
        (lambda: sigmoid_focal_loss(x.long(), t), "logits"),
        (lambda: sigmoid_focal_loss_from_labels(x, labels.float()), "labels"),
        (lambda: sigmoid_focal_loss_from_labels(x, labels[:3]), "labels"),
        (lambda: sigmoid_focal_loss_from_labels(x, torch.tensor([0, 3, -1, -1])), "labels"),
        (lambda: sigmoid_focal_loss_from_labels(x, torch.tensor([0, -3, -1, -1])), "labels"),
        (lambda: sigmoid_focal_loss_from_labels(x[0], labels), "logits"),
        (lambda: sigmoid_focal_loss_from_labels(x, labels, gamma=float("inf")), "gamma"),
        (lambda: focal_loss_star(x, t, gamma=0.0), "gamma"),
        (lambda: focal_loss_star(x, t, beta=float("inf")), "beta"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()


@pytest.mark.parametrize("alpha", [None, 0.0, 0.25, 1.0])
@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_from_labels_keeps_small_background_next_to_dominant_positives(alpha, gamma):
    # A confidently right positive (x = 30) and a confidently wrong one (x = -30, loss ~30)
    # beside a small background loss: every term must be its own elementwise value in
    # float32, not the difference of large sums.
    x = torch.tensor([[30.0, -12.0], [-30.0, -9.0], [-11.0, -10.0]], requires_grad=True)
    labels = torch.tensor([0, 0, -1])
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    expected = sigmoid_focal_loss(x.detach().double(), t, alpha, gamma, "none")
    got = sigmoid_focal_loss_from_labels(x, labels, alpha, gamma, "none")
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=0)
    total = sigmoid_focal_loss_from_labels(x, labels, alpha, gamma, "sum")
    torch.testing.assert_close(total.double(), expected.sum(), rtol=1e-5, atol=0)
    (grad,) = torch.autograd.grad(total, x)
    x64 = x.detach().double().requires_grad_()
    (g64,) = torch.autograd.grad(sigmoid_focal_loss(x64, t, alpha, gamma, "sum"), x64)
    torch.testing.assert_close(grad.double(), g64, rtol=1e-5, atol=0)

"""Fused focal losses against torchvision, BCE, cross entropy and the plain reference formulas."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as tv_sigmoid_focal_loss

from retina.ops import (
    focal_loss_star,
    sigmoid_focal_loss,
    sigmoid_focal_loss_from_labels,
)
from retina.ops.focal_reference import (
    focal_loss_star_reference,
    sigmoid_focal_loss_from_labels_reference,
)

ALPHAS = (-1.0, 0.25, 0.75)
GAMMAS = (0.0, 0.5, 1.0, 2.0, 5.0)
REDUCTIONS = ("none", "mean", "sum")


def _inputs(soft: bool, seed: int = 0, shape=(40, 9)):
    g = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_()
    if soft:
        t = torch.rand(shape, generator=g, dtype=torch.float64)
    else:
        t = (torch.rand(shape, generator=g) < 0.3).double()
    return x, t.requires_grad_(soft)


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("alpha,gamma", list(itertools.product(ALPHAS, GAMMAS)))
def test_sigmoid_focal_loss_matches_torchvision(alpha, gamma, soft):
    x, t = _inputs(soft)
    wrt = [x, t] if soft else [x]
    for reduction in REDUCTIONS:
        ours = sigmoid_focal_loss(x, t, alpha, gamma, reduction)
        ref = tv_sigmoid_focal_loss(x, t, alpha, gamma, reduction)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
        seed = torch.rand_like(ref)
        g_ours = torch.autograd.grad((ours * seed).sum(), wrt)
        g_ref = torch.autograd.grad((ref * seed).sum(), wrt)
        for a, b in zip(g_ours, g_ref, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_none_alpha_equals_negative_alpha():
    x, t = _inputs(soft=True)
    torch.testing.assert_close(sigmoid_focal_loss(x, t, None), sigmoid_focal_loss(x, t, -1))


def test_gamma0_without_alpha_is_binary_cross_entropy():
    x, t = _inputs(soft=True)
    for reduction in REDUCTIONS:
        ours = sigmoid_focal_loss(x, t, alpha=-1, gamma=0, reduction=reduction)
        ref = F.binary_cross_entropy_with_logits(x, t, reduction=reduction)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
        for a, b in zip(
            torch.autograd.grad(ours.sum(), [x, t]),
            torch.autograd.grad(ref.sum(), [x, t]),
            strict=True,
        ):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _labels(n: int, k: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (n,), generator=g)
    kind = torch.rand(n, generator=g)
    labels[kind < 0.6] = -1
    labels[kind > 0.85] = -2
    return labels


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 0.0), (0.75, 0.5), (0.5, 5.0)])
def test_from_labels_equals_one_hot_form(alpha, gamma):
    x, _ = _inputs(soft=False, shape=(64, 7))
    labels = _labels(64, 7)
    keep = labels >= -1
    onehot = torch.zeros_like(x)
    onehot[labels >= 0, labels[labels >= 0]] = 1.0
    for reduction in REDUCTIONS:
        ours = sigmoid_focal_loss_from_labels(x, labels, alpha, gamma, reduction)
        ref = tv_sigmoid_focal_loss(x[keep], onehot[keep], alpha, gamma, reduction)
        if reduction == "none":
            assert ours.shape == x.shape and bool((ours[~keep] == 0).all())
            ours_cmp = ours[keep]
        else:
            ours_cmp = ours
        torch.testing.assert_close(ours_cmp, ref, rtol=1e-12, atol=1e-12)
        (g_ours,) = torch.autograd.grad(ours.sum(), x)
        (g_ref,) = torch.autograd.grad(ref.sum(), x)
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)
        assert bool((g_ours[~keep] == 0).all())
        plain = sigmoid_focal_loss_from_labels_reference(x, labels, alpha, gamma, reduction)
        torch.testing.assert_close(ours, plain, rtol=1e-12, atol=1e-12)


def test_from_labels_all_ignored_and_empty():
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.full((5,), -2)
    assert sigmoid_focal_loss_from_labels(x, labels).item() == 0.0
    assert sigmoid_focal_loss_from_labels(x, labels, reduction="mean").item() == 0.0
    empty = torch.zeros(0, 3, requires_grad=True)
    out = sigmoid_focal_loss_from_labels(empty, torch.zeros(0, dtype=torch.int64))
    out.backward()
    assert out.item() == 0.0 and empty.grad.shape == (0, 3)


@pytest.mark.parametrize("gamma,beta", [(2.0, 1.0), (4.0, 0.0), (1.0, -1.5)])
def test_focal_loss_star_matches_reference(gamma, beta):
    x, t = _inputs(soft=True)
    for reduction in REDUCTIONS:
        ours = focal_loss_star(x, t, gamma, beta, reduction)
        ref = focal_loss_star_reference(x, t, gamma, beta, reduction)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
        for a, b in zip(
            torch.autograd.grad(ours.sum(), [x, t]),
            torch.autograd.grad(ref.sum(), [x, t]),
            strict=True,
        ):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_focal_loss_star_gradient_is_y_times_pstar_minus_one():
    x = torch.linspace(-6, 6, 25, dtype=torch.float64, requires_grad=True)
    t = (torch.arange(25) % 2).double()
    gamma, beta = 3.0, 0.7
    (grad,) = torch.autograd.grad(focal_loss_star(x, t, gamma, beta, "sum"), x)
    y = 2 * t - 1
    p_star = torch.sigmoid(gamma * y * x.detach() + beta)
    torch.testing.assert_close(grad, y * (p_star - 1), rtol=1e-12, atol=1e-14)

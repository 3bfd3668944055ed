"""torch.autograd.gradcheck (float64) of every fused focal-loss Function."""

import pytest
import torch
from torch.autograd import gradcheck

from retina.ops import (
    focal_loss_star,
    sigmoid_focal_loss,
    sigmoid_focal_loss_from_labels,
)


def _x(shape=(6, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_()


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 0.5), (0.75, 0.0), (0.4, 5.0)])
def test_gradcheck_sigmoid_focal_loss(alpha, gamma, reduction):
    x = _x()
    t = torch.rand(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t.requires_grad_()
    assert gradcheck(lambda a, b: sigmoid_focal_loss(a, b, alpha, gamma, reduction), (x, t))
    hard = (t.detach() > 0.5).double()
    assert gradcheck(lambda a: sigmoid_focal_loss(a, hard, alpha, gamma, reduction), (x,))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 0.0), (0.6, 1.5)])
def test_gradcheck_from_labels(alpha, gamma, reduction):
    labels = torch.tensor([0, -1, 4, -2, 2, -1])
    assert gradcheck(
        lambda a: sigmoid_focal_loss_from_labels(a, labels, alpha, gamma, reduction), (_x(),)
    )


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gradcheck_focal_loss_star(reduction):
    t = torch.rand(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t.requires_grad_()
    assert gradcheck(lambda a, b: focal_loss_star(a, b, 2.5, 0.5, reduction), (_x(), t))

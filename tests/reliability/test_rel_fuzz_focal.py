"""Hypothesis fuzzing of the focal loss family on extreme logits (up to +-1e4) in float32,
float16 and bfloat16: values and gradients stay finite and non-negative."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from relhelp import FUZZ_EXAMPLES

from retina.ops import (
    focal_loss_star,
    sigmoid_focal_loss,
    sigmoid_focal_loss_from_labels,
)

FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None)
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Mostly extreme values, where log(sigmoid) and (1 - p)^gamma overflow or cancel naively.
logit = st.one_of(
    st.floats(-1e4, 1e4, allow_nan=False),
    st.sampled_from([-1e4, 1e4, -88.8, 88.8, -17.0, 17.0, 0.0, -1e-8, 1e-8]),
)
gammas = st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0])
alphas = st.sampled_from([None, 0.25, 0.75, 1.0])


@st.composite
def problem(draw):
    """``(logits (N, K) float32 values, labels (N,) in -2..K-1)``."""
    n, k = draw(st.integers(1, 8)), draw(st.integers(1, 5))
    values = draw(st.lists(logit, min_size=n * k, max_size=n * k))
    labels = draw(st.lists(st.integers(-2, k - 1), min_size=n, max_size=n))
    return torch.tensor(values, dtype=torch.float32).reshape(n, k), torch.tensor(labels)


def _check(loss: torch.Tensor, logits: torch.Tensor, what: str) -> None:
    assert torch.isfinite(loss).all(), f"{what}: non-finite loss {loss}"
    assert (loss.float() >= -1e-6).all(), f"{what}: negative loss {loss}"
    (grad,) = torch.autograd.grad(loss.float().sum(), logits)
    assert torch.isfinite(grad).all(), f"{what}: non-finite gradient {grad}"


def _leaf(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return values.to(dtype).requires_grad_(True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@FUZZ
@given(problem(), gammas, alphas, st.sampled_from(["none", "mean"]))
def test_sigmoid_focal_loss_finite(dtype, case, gamma, alpha, reduction) -> None:
    values, labels = case
    targets = torch.nn.functional.one_hot(labels.clamp(min=0), values.shape[1]).float()
    targets[labels < 0] = 0.0
    logits = _leaf(values, dtype)
    loss = sigmoid_focal_loss(logits, targets.to(dtype), alpha, gamma, reduction)
    _check(loss, logits, f"sigmoid_focal_loss {dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@FUZZ
@given(problem(), gammas, alphas, st.sampled_from(["none", "mean", "sum"]))
def test_sigmoid_focal_loss_from_labels_finite(dtype, case, gamma, alpha, reduction) -> None:
    values, labels = case
    if dtype == torch.float16 and reduction == "sum":
        values = values / 100  # a sum of many 1e4 losses is beyond float16's 65504
    logits = _leaf(values, dtype)
    loss = sigmoid_focal_loss_from_labels(logits, labels, alpha, gamma, reduction)
    _check(loss, logits, f"sigmoid_focal_loss_from_labels {dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@FUZZ
@given(
    problem(),
    st.sampled_from([0.5, 1.0, 2.0, 4.0]),
    st.sampled_from([-2.0, 0.0, 1.0]),
    st.sampled_from(["none", "mean"]),
)
def test_focal_loss_star_finite(dtype, case, gamma, beta, reduction) -> None:
    values, labels = case
    targets = torch.nn.functional.one_hot(labels.clamp(min=0), values.shape[1]).float()
    targets[labels < 0] = 0.0
    logits = _leaf(values, dtype)
    loss = focal_loss_star(logits, targets.to(dtype), gamma, beta, reduction)
    _check(loss, logits, f"focal_loss_star {dtype}")


@pytest.mark.parametrize(("gamma", "alpha"), [(0.0, None), (0.0, 0.75), (0.5, 0.5)])
def test_from_labels_matches_the_elementwise_loss_for_confident_positives(gamma, alpha) -> None:
    """Found by the fuzzing above: confident positives (logit 25-30) next to a tiny
    background loss. The loss must stay the elementwise one (computed here in float64),
    not the difference of two large sums."""
    logits = torch.tensor([[30.0], [25.0], [-12.0]])
    labels = torch.tensor([0, 0, -1])
    targets = torch.tensor([[1.0], [1.0], [0.0]], dtype=torch.float64)
    expected = sigmoid_focal_loss(logits.double(), targets, alpha, gamma, "sum")
    got = sigmoid_focal_loss_from_labels(logits, labels, alpha, gamma, "sum")
    assert torch.isclose(got.double(), expected, rtol=1e-3, atol=0), (float(got), float(expected))

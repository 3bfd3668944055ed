"""The paper's figures (seed 000) and the worked example of seed 002, through the real API."""

import math

import torch

from retina.ops import sigmoid_focal_loss, sigmoid_focal_loss_from_labels


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _ce_over_fl(p_t: torch.Tensor) -> torch.Tensor:
    """CE / FL for positive examples at probability p_t (gamma = 2, alpha disabled)."""
    x = torch.log(p_t / (1 - p_t))
    ones = torch.ones_like(x)
    ce = sigmoid_focal_loss(x, ones, alpha=-1, gamma=0)
    fl = sigmoid_focal_loss(x, ones, alpha=-1, gamma=2)
    return ce / fl


def test_ce_over_fl_is_100_at_pt_0_9():
    ratio = _ce_over_fl(torch.tensor([0.9], dtype=torch.float64))
    torch.testing.assert_close(ratio, torch.tensor([100.0], dtype=torch.float64))


def test_ce_over_fl_is_about_1000_at_pt_0_968():
    ratio = _ce_over_fl(torch.tensor([0.968], dtype=torch.float64)).item()
    assert round(ratio, -2) == 1000  # exactly 1 / 0.032^2 = 976.6


def test_ce_over_fl_is_at_most_4_below_pt_0_5():
    p_t = torch.linspace(1e-4, 0.5, 1001, dtype=torch.float64)
    ratio = _ce_over_fl(p_t)
    assert ratio.max().item() <= 4.0 + 1e-9
    torch.testing.assert_close(ratio[-1], torch.tensor(4.0, dtype=torch.float64))


def test_seed002_worked_example_share_of_positives():
    # 10^6 negatives at p_t = 0.99 and 10 positives at p_t = 0.01: p = 0.01 for all of them.
    n_neg, n_pos = 10**6, 10
    logits = torch.full((n_neg + n_pos, 1), _logit(0.01))
    labels = torch.full((n_neg + n_pos,), -1, dtype=torch.int64)
    labels[:n_pos] = 0

    def positive_share(alpha: float, gamma: float) -> float:
        loss = sigmoid_focal_loss_from_labels(logits, labels, alpha, gamma, reduction="none")
        total = sigmoid_focal_loss_from_labels(logits, labels, alpha, gamma, reduction="sum")
        return (loss[:n_pos].sum() / total).item()

    assert round(positive_share(alpha=-1, gamma=0), 4) == 0.0046
    assert round(positive_share(alpha=0.25, gamma=2), 4) == 0.9374

    targets = (labels >= 0).float()[:, None]
    fl = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2)
    assert round((fl[:n_pos].sum() / fl.sum()).item(), 4) == 0.9374

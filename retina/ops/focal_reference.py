"""Plain, readable formulas of the focal loss family, differentiated by autograd.

These are the definitions from Lin et al., "Focal Loss for Dense Object Detection"
(ICCV 2017), written term by term. They are the reference the fused kernels in
:mod:`retina.ops.focal` are tested against; they are not meant to be fast.
Every log-probability is taken from logits (``logsigmoid``), never as ``log(sigmoid(x))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    return loss


def sigmoid_focal_loss_reference(logits: Tensor, targets: Tensor, alpha: float | None = 0.25,
                                 gamma: float = 2.0, reduction: str = "none") -> Tensor:
    """FL = -alpha_t (1 - p_t)^gamma log(p_t), elementwise; any shape, targets in [0, 1].

    ``alpha`` None or < 0 disables the alpha_t weighting.
    """
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None and alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return _reduce(loss, reduction)


def sigmoid_focal_loss_from_labels_reference(logits: Tensor, labels: Tensor,
                                             alpha: float | None = 0.25, gamma: float = 2.0,
                                             reduction: str = "sum") -> Tensor:
    """One-hot form: logits (N, K), labels (N,) with class >= 0, -1 background, -2 ignored.

    Builds the (N, K) one-hot target explicitly; ignored rows are zero in ``"none"`` and
    excluded from the ``"mean"`` denominator.
    """
    valid = labels >= -1
    onehot = torch.zeros_like(logits)
    pos = labels >= 0
    onehot[pos, labels[pos]] = 1.0
    loss = sigmoid_focal_loss_reference(logits, onehot, alpha, gamma, "none")
    loss = loss * valid[:, None].to(loss.dtype)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / (valid.sum() * logits.shape[1]).clamp_min(1)
    return loss


def focal_loss_star_reference(logits: Tensor, targets: Tensor, gamma: float = 4.0,
                              beta: float = 0.0, reduction: str = "none") -> Tensor:
    """FL* = -log(sigmoid(gamma x_t + beta)) / gamma, x_t = x (positives) or -x (negatives).

    Soft targets t in [0, 1] mix the two cases linearly: t FL*(x_t = x) + (1 - t) FL*(x_t = -x).
    """
    pos = -F.logsigmoid(gamma * logits + beta) / gamma
    neg = -F.logsigmoid(-gamma * logits + beta) / gamma
    return _reduce(targets * pos + (1 - targets) * neg, reduction)

"""Head: output shapes/order, the prior initialisation, prior_prob=None."""

import math

import pytest
import torch

from retina.modeling import RetinaNetHead
from retina.modeling.head import prior_bias


def test_shapes_and_layout():
    head = RetinaNetHead(in_channels=16, num_anchors=9, num_classes=3, num_convs=1)
    feats = [torch.randn(2, 16, 4, 6), torch.randn(2, 16, 2, 3)]
    logits, deltas = head(feats)
    assert logits.shape == (2, 9 * (24 + 6), 3) and deltas.shape == (2, 9 * 30, 4)
    # anchor index (y, x, a) of level 0 reads channel a*K + k at pixel (y, x)
    raw = head.cls_score(head.cls_subnet[0](feats[0]))
    y, x, a, k = 1, 4, 7, 2
    torch.testing.assert_close(logits[1, (y * 6 + x) * 9 + a, k], raw[1, a * 3 + k, y, x])


def test_prior_init_gives_mean_score_pi():
    torch.manual_seed(0)
    head = RetinaNetHead(in_channels=64, num_anchors=9, num_classes=20, prior_prob=0.01)
    assert torch.allclose(head.cls_score.bias, torch.tensor(-math.log(99.0)))
    assert abs(float(head.cls_score.weight.detach().std()) - 0.01) < 1e-3
    with torch.no_grad():
        logits, _ = head([torch.randn(2, 64, 16, 16)])
    assert abs(float(logits.sigmoid().mean()) - 0.01) < 1e-3


def test_prior_none_is_bias_zero_and_gn_option():
    head = RetinaNetHead(in_channels=32, num_anchors=9, num_classes=4, prior_prob=None, norm="gn")
    assert torch.count_nonzero(head.cls_score.bias) == 0
    assert isinstance(head.cls_subnet[0][1], torch.nn.GroupNorm)
    assert head.cls_subnet[0][0].bias is None  # no conv bias before a norm
    assert prior_bias(0.5) == 0.0
    with pytest.raises(ValueError, match="prior_prob"):
        prior_bias(1.5)

"""Classification-loss modules (focal family, OHEM) and box losses."""

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.models.detection._utils import _box_loss

from retina.modeling import BoxCoder, FocalLoss, FocalLossStar, OHEMLoss, box_regression_loss
from retina.ops.focal_reference import (
    focal_loss_star_reference,
    sigmoid_focal_loss_from_labels_reference,
)


def _batch(n_img=2, a=50, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n_img * a, k, generator=g)
    labels = torch.randint(-2, k, (n_img * a,), generator=g)
    return logits, labels


@pytest.mark.parametrize("gamma,alpha", [(2.0, 0.25), (0.0, None), (0.0, 0.75)])
def test_focal_sum_and_per_image(gamma, alpha):
    logits, labels = _batch()
    loss = FocalLoss(gamma=gamma, alpha=alpha)
    total = loss(logits, labels, 2)
    ref = sigmoid_focal_loss_from_labels_reference(logits, labels, alpha, gamma, "sum")
    torch.testing.assert_close(total, ref)
    per = loss(logits, labels, 2, per_image=True)
    assert per.shape == (2,)
    torch.testing.assert_close(per.sum(), total)


def test_focal_star_matches_reference():
    logits, labels = _batch()
    valid = labels >= -1
    onehot = torch.zeros_like(logits)
    onehot[labels >= 0, labels[labels >= 0]] = 1
    ref = (focal_loss_star_reference(logits, onehot, 4.0, 0.5) * valid[:, None]).sum()
    torch.testing.assert_close(FocalLossStar(gamma=4.0, beta=0.5)(logits, labels, 2), ref)


def test_ohem_selects_hardest_after_nms_with_ratio():
    # 1 image, 6 anchors; anchors 0 and 1 coincide (NMS removes the easier one)
    anchors = torch.tensor(
        [[0, 0, 10, 10], [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10],
         [80, 0, 90, 10]], dtype=torch.float32)  # fmt: skip
    loss = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0, 0.5]])
    labels = torch.tensor([[-1, -1, 0, 1, -1, -2]])
    ohem = OHEMLoss(batch_size_per_image=2, positive_fraction=None, nms_thresh=0.7)
    assert ohem.select(loss, labels, anchors).tolist() == [[True, False, True, False, False, False]]
    ratio = OHEMLoss(batch_size_per_image=4, positive_fraction=0.25, nms_thresh=0.7)
    # at most 1 positive (anchor 2), negatives fill the rest: 0 and 4 (1 suppressed, 5 ignored)
    assert ratio.select(loss, labels, anchors).tolist() == [[True, False, True, False, True, False]]


def test_ohem_loss_is_sum_of_selected_ce_and_needs_anchors():
    logits, labels = _batch(n_img=2, a=30)
    anchors = torch.rand(30, 2) * 100
    anchors = torch.cat([anchors, anchors + 5 + torch.rand(30, 2) * 20], 1)
    ohem = OHEMLoss(batch_size_per_image=8, positive_fraction=0.25)
    total = ohem(logits, labels, 2, anchors=anchors)
    ce = sigmoid_focal_loss_from_labels_reference(logits, labels, None, 0.0, "none").sum(1)
    mask = ohem.select(ce.view(2, -1), labels.view(2, -1), anchors)
    assert int(mask.sum(1).max()) <= 8
    torch.testing.assert_close(total, (ce.view(2, -1) * mask).sum())
    with pytest.raises(ValueError, match="anchors"):
        ohem(logits, labels, 2)


@pytest.mark.parametrize("kind", ["l1", "smooth_l1", "giou"])
def test_box_losses_match_torchvision(kind):
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(20, 2, generator=g) * 100
    anchors = torch.cat([xy, xy + 16 + torch.rand(20, 2, generator=g) * 50], 1)
    gt = anchors + torch.randn(20, 4, generator=g) * 3
    deltas = torch.randn(20, 4, generator=g) * 0.1
    ours = box_regression_loss(kind, deltas, anchors, gt, BoxCoder(), beta=1.0)
    assert ours.shape == (20,)
    ref = _box_loss(kind, TVBoxCoder((1.0, 1.0, 1.0, 1.0)), anchors, gt, deltas)
    torch.testing.assert_close(ours.sum(), ref)
    with pytest.raises(ValueError, match="box_loss"):
        box_regression_loss("iou", deltas, anchors, gt, BoxCoder())

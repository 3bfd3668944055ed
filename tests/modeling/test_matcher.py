"""Matcher on hand-written IoU matrices, batched with padding, crowd boxes, torchvision parity."""

import torch
from torchvision.models.detection._utils import Matcher as TVMatcher

from retina.modeling import Matcher


def test_hand_written_iou_matrix():
    # 2 boxes x 5 anchors
    iou = torch.tensor([[0.9, 0.45, 0.1, 0.3, 0.0], [0.2, 0.3, 0.55, 0.35, 0.0]])[None]
    valid = torch.ones(1, 2, dtype=torch.bool)
    no_lq = Matcher(0.5, 0.4, allow_low_quality_matches=False)(iou, valid)
    assert no_lq.tolist() == [[0, -2, 1, -1, -1]]
    lq = Matcher(0.5, 0.4, allow_low_quality_matches=True)(iou, valid)
    assert lq.tolist() == [[0, -2, 1, -1, -1]]  # both boxes already have their best anchor


def test_low_quality_matches_keep_best_anchor_and_ties():
    iou = torch.tensor([[0.3, 0.3, 0.1], [0.0, 0.2, 0.35]])[None]
    valid = torch.ones(1, 2, dtype=torch.bool)
    assert Matcher(0.5, 0.4, False)(iou, valid).tolist() == [[-1, -1, -1]]
    # box 0's best (0.3) is tied on anchors 0 and 1; anchor 1 still takes its own best (box 0)
    assert Matcher(0.5, 0.4, True)(iou, valid).tolist() == [[0, 0, 1]]


def test_box_with_zero_overlap_claims_nothing():
    iou = torch.tensor([[0.0, 0.0, 0.0]])[None]
    out = Matcher(0.5, 0.4, True)(iou, torch.ones(1, 1, dtype=torch.bool))
    assert out.tolist() == [[-1, -1, -1]]


def test_batched_padding_and_empty_images():
    iou = torch.zeros(3, 2, 4)
    iou[0, 0] = torch.tensor([0.7, 0.1, 0.0, 0.0])
    iou[0, 1] = torch.tensor([0.0, 0.0, 0.6, 0.45])
    iou[1, 0] = torch.tensor([0.2, 0.8, 0.0, 0.0])
    iou[1, 1] = torch.tensor([0.9, 0.9, 0.9, 0.9])  # padding: must be ignored
    valid = torch.tensor([[True, True], [True, False], [False, False]])
    out = Matcher()(iou, valid)
    assert out.tolist() == [[0, -1, 1, -2], [-1, 0, -1, -1], [-1, -1, -1, -1]]
    assert Matcher()(torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool)).tolist() == [
        [-1] * 4
    ] * 2


def test_crowd_never_positive_and_ignores_its_best_anchors():
    # box 0 normal, box 1 crowd
    iou = torch.tensor([[0.6, 0.1, 0.0, 0.5], [0.0, 0.8, 0.3, 0.7]])[None]
    valid = torch.ones(1, 2, dtype=torch.bool)
    crowd = torch.tensor([[False, True]])
    out = Matcher()(iou, valid, crowd)
    # a0: fg; a1: crowd best (0.8) -> ignored; a2: crowd 0.3 < 0.4 -> background;
    # a3: crowd 0.7 beats box 0.5 -> ignored
    assert out.tolist() == [[0, -2, -1, -2]]
    crowd_only = Matcher()(iou[:, 1:], valid[:, 1:], crowd[:, 1:])
    assert crowd_only.tolist() == [[-1, -2, -1, -2]]


def test_matches_torchvision_on_random_iou():
    g = torch.Generator().manual_seed(0)
    iou = torch.rand(6, 500, generator=g) ** 2
    ours = Matcher(0.5, 0.4, True)(iou[None], torch.ones(1, 6, dtype=torch.bool))[0]
    assert torch.equal(ours, TVMatcher(0.5, 0.4, True)(iou.clone()))

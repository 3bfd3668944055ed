"""Box ops against torchvision: batched IoU, GIoU loss, clipping, offset NMS."""

import torch
from torchvision.ops import batched_nms, box_iou, generalized_box_iou_loss

from retina.ops.boxes import (
    batched_pairwise_iou,
    clip_boxes,
    generalized_iou_loss,
    offset_batched_nms,
)


def _boxes(n, seed, scale=200.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * scale
    return torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=g) * scale / 2], 1)


def test_batched_iou_matches_box_iou_and_handles_empty_boxes():
    gt = torch.stack([_boxes(5, 0), _boxes(5, 1)])
    anchors = _boxes(40, 2)
    iou = batched_pairwise_iou(gt, anchors)
    assert iou.shape == (2, 5, 40)
    for i in range(2):
        torch.testing.assert_close(iou[i], box_iou(gt[i], anchors))
    zero = batched_pairwise_iou(torch.zeros(1, 2, 4), torch.zeros(3, 4))
    assert torch.equal(zero, torch.zeros(1, 2, 3))


def test_giou_loss_matches_torchvision():
    a, b = _boxes(30, 3), _boxes(30, 4)
    torch.testing.assert_close(
        generalized_iou_loss(a, b).sum(), generalized_box_iou_loss(a, b, reduction="sum")
    )


def test_clip_boxes_per_image():
    boxes = torch.tensor([[[-5.0, -5, 50, 50]], [[-5.0, -5, 50, 50]]])
    out = clip_boxes(boxes, torch.tensor([[40, 30], [100, 100]]))
    assert out.tolist() == [[[0, 0, 30, 40]], [[0, 0, 50, 50]]]


def test_offset_nms_matches_batched_nms_over_many_groups():
    boxes = _boxes(3000, 5, scale=800.0)
    g = torch.Generator().manual_seed(6)
    scores = torch.rand(3000, generator=g)
    groups = torch.randint(0, 16 * 91, (3000,), generator=g)
    assert torch.equal(
        offset_batched_nms(boxes, scores, groups, 0.5), batched_nms(boxes, scores, groups, 0.5)
    )
    assert offset_batched_nms(boxes[:0], scores[:0], groups[:0], 0.5).numel() == 0

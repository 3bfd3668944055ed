"""The one anchor assignment: hand-counted matches, and training, retina-stats and Figure 4
all following a change of the matcher."""

import pytest
import torch

from retina.analysis.imbalance import count_image
from retina.analysis.loss_cdf import anchor_logits_and_labels
from retina.modeling import build_retinanet
from retina.modeling.matcher import BACKGROUND, IGNORE

# 128 px, one anchor per location (size 16 at stride 8 ... 256 at 128): 341 anchors. Box A is
# the P3 anchor centred at (32, 32); box B [62, 24, 78, 40] has IoU 224/288 with the P3 anchor
# at (72, 32) (positive) and 160/352 = 0.45 with the one at (64, 32) (ignored at 0.5 / 0.4);
# every other anchor has IoU < 0.4 with both.
BOXES = [[24.0, 24.0, 40.0, 40.0], [62.0, 24.0, 78.0, 40.0]]
P3_32_32, P3_64_32, P3_72_32 = 4 * 16 + 4, 4 * 16 + 8, 4 * 16 + 9  # row 4, columns 4, 8, 9


def _model():
    torch.manual_seed(0)
    return build_retinanet(num_classes=2, depth=10, norm="gn", freeze_at=0, fpn_channels=8,
                           num_convs=1, num_scales=1, aspect_ratios=(1.0,),
                           anchor_sizes=(16, 32, 64, 128, 256))  # fmt: skip


def _image_and_target(crowd=None):
    target = {"boxes": torch.tensor(BOXES), "labels": torch.tensor([0, 1])}
    if crowd is not None:
        target["crowd_boxes"] = torch.tensor(crowd)
    return torch.full((3, 128, 128), 127, dtype=torch.uint8), target


def test_assignment_by_hand():
    model = _model()
    image, target = _image_and_target()
    a = model.assign([image], [target])
    assert a.labels.shape == a.matches.shape == (1, 341) and a.matched_boxes.shape == (1, 341, 4)
    fg = a.foreground[0].nonzero().flatten().tolist()
    assert fg == [P3_32_32, P3_72_32]
    assert a.labels[0, fg].tolist() == [0, 1] and a.matches[0, fg].tolist() == [0, 1]
    assert a.matched_boxes[0, fg].tolist() == BOXES
    assert a.ignore[0].nonzero().flatten().tolist() == [P3_64_32]
    assert int((a.labels == BACKGROUND).sum()) == 338
    assert not a.matched_boxes[0, ~a.foreground[0]].any()
    # the same anchors as the forward pass: R equals the logits' anchor count
    logits, _ = model.head(model.fpn(model.backbone(model.preprocess([image])[0])))
    assert logits.shape[1] == a.labels.shape[1]


def test_crowd_boxes_are_ignored_never_foreground():
    model = _model()
    # the crowd box is the P4 anchor centred at (96, 96): IoU 1, yet ignored, not foreground
    image, target = _image_and_target(crowd=[[80.0, 80.0, 112.0, 112.0]])
    a = model.assign([image], [target])
    p4_96_96 = 16 * 16 + 6 * 8 + 6
    assert a.foreground[0].nonzero().flatten().tolist() == [P3_32_32, P3_72_32]
    assert a.ignore[0].nonzero().flatten().tolist() == [P3_64_32, p4_96_96]


@pytest.mark.parametrize("fg_iou_thresh, positives", [(0.5, 2), (0.45, 3)])
def test_training_stats_and_loss_cdf_follow_the_matcher(fg_iou_thresh, positives):
    model = _model()
    model.matcher.fg_iou_thresh = fg_iou_thresh
    image, target = _image_and_target()
    counts = count_image(model.eval(), image, target)  # retina-stats
    _, labels = anchor_logits_and_labels(model, [image], [target])  # Figure 4
    model.train()
    trained = model([image], [target]).stats["num_pos"].item()  # the training loss
    assert counts.positive == int((labels >= 0).sum()) == trained == positives
    assert counts.ignored == int((labels == IGNORE).sum()) == 3 - positives


@pytest.mark.parametrize("label", [-1, -2, 2])
def test_a_label_outside_0_k_is_refused_naming_the_image(label: int) -> None:
    """Only boxes the dataset marks as crowd are ignore regions: an ordinary box labelled -1
    (once accepted: its foreground anchors trained as background while the box head still
    regressed them) is refused like 2 or -2, naming the image."""
    model = _model()
    image, good = _image_and_target()
    bad = {**good, "labels": torch.tensor([0, label]), "image_id": 42}
    with pytest.raises(ValueError, match=rf"^image 42: targets\[1\]: .* label {label} "):
        model.assign([image, image], [good, bad])
    image, crowd = _image_and_target(crowd=[[80.0, 80.0, 120.0, 120.0]])
    assert model.assign([image], [{**crowd, "image_id": 42}]).foreground.any()

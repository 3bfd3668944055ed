"""torchvision's RetinaNet behind retina's model interface: the trainer's (losses, stats)."""

import math

import torch

from retina.modeling.build import model_defaults
from retina.modeling.torchvision_reference import build_torchvision_retinanet

TINY = {"depth": 10, "weights": None, "norm": "gn", "freeze_at": 0, "fpn_channels": 32,
        "num_convs": 1, "anchor_sizes": [16, 32, 64, 128, 256]}  # fmt: skip
FOCAL = {"_target_": "retina.modeling.losses.FocalLoss", "gamma": 2.0, "alpha": 0.25}


def test_keys_left_out_take_the_constructors_defaults_and_train_mode_returns_a_pair():
    torch.manual_seed(0)
    model = build_torchvision_retinanet(TINY, FOCAL, 2)
    defaults = model_defaults()
    assert model.model.proposal_matcher.high_threshold == defaults["fg_iou_thresh"]
    assert model.model.score_thresh == defaults["score_thresh"]
    images = [torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])}]
    losses, stats = model.train()(images, targets)
    assert set(losses) == {"loss_cls", "loss_box_reg"} and stats == {}
    assert all(math.isfinite(v.item()) for v in losses.values())

"""retina.modeling.torchvision_reference: torchvision's RetinaNet built from a retina config,
and its parity with retina's RetinaNet under the torchvision-matching options."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torchvision.models.detection.retinanet import RetinaNetClassificationHead

from retina.config import CONFIG_DIR
from retina.errors import ConfigError
from retina.modeling import build_retinanet
from retina.modeling.build import model_defaults
from retina.modeling.losses import FocalLoss
from retina.modeling.torchvision import convert_state_dict
from retina.modeling.torchvision_reference import (
    AlphaGammaClassificationHead,
    build_torchvision_retinanet,
)

FOCAL = {"_target_": "retina.modeling.losses.FocalLoss", "gamma": 2.0, "alpha": 0.25}
ALPHA_CE = {**FOCAL, "gamma": 0.0, "alpha": 0.75}
TINY = {"depth": 10, "weights": None, "norm": "gn", "freeze_at": 0, "fpn_channels": 32,
        "num_convs": 1, "anchor_sizes": [16, 32, 64, 128, 256]}  # fmt: skip


def _tiny() -> dict:
    """The resolved ``model=retinanet_tiny`` node (its keys over the constructors' defaults)."""
    node = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "model" / "retinanet_tiny.yaml"))
    return {**model_defaults(), **{k: v for k, v in node.items()
                                   if k not in ("defaults", "_target_")}}


def _batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 128, 128), dtype=torch.uint8, generator=g)
              for _ in range(2)]
    targets = [  # 3 boxes in one image, 1 in the other: the two normalisers differ
        {"boxes": torch.tensor([[10.0, 12.0, 40.0, 50.0], [60.0, 60.0, 120.0, 100.0],
                                [5.0, 70.0, 30.0, 90.0]]), "labels": torch.tensor([0, 2, 1])},
        {"boxes": torch.tensor([[30.0, 20.0, 90.0, 110.0]]), "labels": torch.tensor([1])},
    ]
    return images, targets


@pytest.mark.parametrize("loss", [FOCAL, ALPHA_CE], ids=["fl", "alpha_ce"])
def test_retina_with_torchvision_options_has_torchvision_loss_and_gradients(loss: dict):
    torch.manual_seed(0)
    tv = build_torchvision_retinanet(_tiny(), loss, num_classes=3)
    options = {"loss_normalizer": "image", "box_loss": "l1", "torchvision_anchors": True}
    ours = build_retinanet(**{**_tiny(), **options}, num_classes=3,
                           cls_loss=FocalLoss(loss["gamma"], loss["alpha"]))
    missing, unexpected = ours.load_state_dict(
        convert_state_dict(tv.model.state_dict(), keep_num_batches_tracked=True), strict=False)
    assert not unexpected and all(k.startswith(("pixel_", "normalizer")) for k in missing)
    images, targets = _batch()
    tv_loss, our_loss = tv.train()(images, targets).losses, ours.train()(images, targets).losses
    for key in ("loss_cls", "loss_box_reg"):
        assert our_loss[key].item() == pytest.approx(tv_loss[key].item(), rel=1e-5)
    tv_grads = torch.autograd.grad(sum(tv_loss.values()), [
        tv.model.head.classification_head.cls_logits.weight,
        tv.model.head.regression_head.bbox_reg.weight, tv.model.backbone.body.conv1.weight])
    our_grads = torch.autograd.grad(sum(our_loss.values()), [
        ours.head.cls_score.weight, ours.head.bbox_pred.weight, ours.backbone.body.conv1.weight])
    for a, b in zip(tv_grads, our_grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)
    # retina's defaults (batch normaliser, smooth-L1) are a different loss on the same batch
    default = build_retinanet(**_tiny(), num_classes=3, cls_loss=FocalLoss(2.0, 0.25))
    default.load_state_dict(ours.state_dict())
    assert default.train()(images, targets).losses["loss_box_reg"].item() != pytest.approx(
        tv_loss["loss_box_reg"].item(), rel=1e-3)


def test_alpha_gamma_head_at_2_and_025_is_torchvision_head():
    torch.manual_seed(0)
    stock = RetinaNetClassificationHead(8, 9, 3)
    ours = AlphaGammaClassificationHead(8, 9, 3, gamma=2.0, alpha=0.25)
    ours.load_state_dict(stock.state_dict())
    logits = torch.randn(2, 50, 3)
    matched = [torch.randint(-2, 2, (50,)), torch.full((50,), -1)]
    targets = [{"labels": torch.tensor([0, 2])}, {"labels": torch.zeros(0, dtype=torch.int64)}]
    out = {"cls_logits": logits}
    assert ours.compute_loss(targets, out, matched).item() == pytest.approx(
        stock.compute_loss(targets, out, matched).item(), rel=1e-6)
    ce = AlphaGammaClassificationHead(8, 9, 3, gamma=0.0, alpha=0.75)
    assert ce.compute_loss(targets, out, matched).item() != pytest.approx(
        stock.compute_loss(targets, out, matched).item(), rel=1e-3)


def test_layout_follows_the_config():
    model = build_torchvision_retinanet({**_tiny(), "num_convs": 1}, ALPHA_CE, 3).model
    assert len(model.head.classification_head.conv) == 1
    assert len(model.head.regression_head.conv) == 1
    assert isinstance(model.head.classification_head, AlphaGammaClassificationHead)
    assert model.backbone.fpn.extra_blocks.p6.in_channels == 512  # P6 from C5
    assert model.backbone.fpn.extra_blocks.p6.out_channels == 64
    assert model.anchor_generator.sizes[0] == (16, 20, 25)  # int(16 * 2^(i/3))
    assert model.proposal_matcher.allow_low_quality_matches
    stock = build_torchvision_retinanet(_tiny(), FOCAL, 3).model.head.classification_head
    assert type(stock) is RetinaNetClassificationHead


@pytest.mark.parametrize(("model", "loss", "key"), [
    ({}, {"_target_": "retina.modeling.losses.OHEMLoss"}, "loss._target_"),
    ({"prior_prob": None}, ALPHA_CE, "model.prior_prob"),
    ({"depth": 34, "fpn_channels": 512}, FOCAL, "model.p6_from"),
    ({"anchor_offset": 0.5}, FOCAL, "model.anchor_offset"),
    ({"box_coder_weights": [10.0, 10.0, 5.0, 5.0]}, FOCAL, "model.box_coder_weights"),
    ({"scale_clamp": 3.0}, FOCAL, "model.scale_clamp"),
    ({"head_norm": "bn"}, FOCAL, "model.head_norm"),
])
def test_settings_torchvision_cannot_express_are_config_errors(model, loss, key):
    with pytest.raises(ConfigError, match=key):
        build_torchvision_retinanet({**_tiny(), **model}, loss, 3)


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

"""Backbone: depths, norms, freeze_at, weights from a local file; FPN levels (weights by
torchvision name: test_pretrained.py)."""

import pytest
import torch
from torchvision.models import resnet18
from torchvision.ops import FrozenBatchNorm2d

from retina.modeling import FPN, ResNetBackbone


@pytest.mark.parametrize("depth,channels", [(10, [128, 256, 512]), (50, [512, 1024, 2048])])
def test_out_channels_and_strides(depth, channels):
    bb = ResNetBackbone(depth=depth, norm="bn", freeze_at=0)
    assert bb.out_channels == channels
    c3, c4, c5 = bb(torch.zeros(1, 3, 64, 128))
    assert [c.shape[1] for c in (c3, c4, c5)] == channels
    assert [c.shape[-2:] for c in (c3, c4, c5)] == [(8, 16), (4, 8), (2, 4)]


def test_norms_and_freeze_at():
    bb = ResNetBackbone(depth=18, norm="frozen_bn", freeze_at=2)
    assert isinstance(bb.body.bn1, FrozenBatchNorm2d)
    assert not any(p.requires_grad for p in bb.body.conv1.parameters())
    assert not any(p.requires_grad for p in bb.body.layer1.parameters())
    assert all(p.requires_grad for p in bb.body.layer2.parameters())
    gn = ResNetBackbone(depth=10, norm="gn", freeze_at=0)
    assert isinstance(gn.body.bn1, torch.nn.GroupNorm)
    assert all(p.requires_grad for p in gn.parameters())
    with pytest.raises(ValueError, match="norm="):
        ResNetBackbone(depth=10, norm="ln")
    with pytest.raises(ValueError, match="depth=7"):
        ResNetBackbone(depth=7)


@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_frozen_stages_are_frozen_in_train_mode(norm):
    """With norm=bn the frozen stem and layer1 use FrozenBatchNorm2d: a train-mode forward
    leaves their running statistics (and affine parameters) as loaded, while the trainable
    stages' BatchNorm keeps learning. (Once only requires_grad was turned off, and the frozen
    stages' running statistics moved with every batch.)"""
    torch.manual_seed(0)
    bb = ResNetBackbone(depth=10, norm=norm, freeze_at=2).train()
    frozen = {k: v.clone() for k, v in bb.state_dict().items()
              if k.startswith(("body.bn1.", "body.conv1.", "body.layer1."))}
    layer2 = {k: v.clone() for k, v in bb.state_dict().items()
              if k.startswith("body.layer2.") and "running_mean" in k}
    bb(torch.randn(2, 3, 64, 64) * 3 + 1)
    after = bb.state_dict()
    assert frozen and all(torch.equal(after[k], v) for k, v in frozen.items())
    assert not any(p.requires_grad for p in bb.body.layer1.parameters())
    if norm == "bn":
        assert isinstance(bb.body.bn1, FrozenBatchNorm2d)
        assert isinstance(bb.body.layer1[0].bn1, FrozenBatchNorm2d)
        assert type(bb.body.layer2[0].bn1) is torch.nn.BatchNorm2d
        assert layer2 and not any(torch.equal(after[k], v) for k, v in layer2.items())


def test_freezing_keeps_the_loaded_statistics(tmp_path):
    ref = resnet18()
    with torch.no_grad():
        ref.bn1.running_mean.uniform_(-1, 1)
        ref.layer1[0].bn2.weight.uniform_(0.5, 2)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    bb = ResNetBackbone(depth=18, weights=str(path), norm="bn", freeze_at=2)
    assert torch.equal(bb.body.bn1.running_mean, ref.bn1.running_mean)
    assert torch.equal(bb.body.layer1[0].bn2.weight, ref.layer1[0].bn2.weight)


def test_weights_from_local_file(tmp_path):
    ref = resnet18()
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    bb = ResNetBackbone(depth=18, weights=str(path), norm="frozen_bn")
    torch.testing.assert_close(bb.body.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    with pytest.raises(ValueError, match=r"r18\.pth: not a checkpoint of this ResNet"):
        ResNetBackbone(depth=50, weights=str(path))


@pytest.mark.parametrize("p6_from,p6_in", [("c5", 64), ("p5", 16)])
def test_fpn_levels(p6_from, p6_in):
    fpn = FPN([16, 32, 64], 16, p6_from=p6_from)
    assert fpn.p6.in_channels == p6_in
    feats = [torch.randn(1, 16, 16, 16), torch.randn(1, 32, 8, 8), torch.randn(1, 64, 4, 4)]
    outs = fpn(feats)
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2, 1]
    assert all(o.shape[1] == 16 for o in outs)

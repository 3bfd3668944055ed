"""ResNet bodies from torchvision returning C3-C5, with a norm choice, frozen stages and
weights from a local file or a torchvision weights name (see :mod:`retina.modeling.pretrained`)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet
from torchvision.ops import FrozenBatchNorm2d

from retina.errors import ConfigError
from retina.modeling.pretrained import load_weights

__all__ = ["ResNetBackbone", "make_norm", "NORMS"]

NORMS = ("frozen_bn", "bn", "syncbn", "gn")

_DEPTHS: dict[int, tuple[type[nn.Module], list[int], str | None]] = {
    10: (tv_resnet.BasicBlock, [1, 1, 1, 1], None),
    18: (tv_resnet.BasicBlock, [2, 2, 2, 2], "resnet18"),
    34: (tv_resnet.BasicBlock, [3, 4, 6, 3], "resnet34"),
    50: (tv_resnet.Bottleneck, [3, 4, 6, 3], "resnet50"),
    101: (tv_resnet.Bottleneck, [3, 4, 23, 3], "resnet101"),
}


def make_norm(norm: str, eps: float = 1e-5, gn_groups: int = 32) -> Callable[[int], nn.Module]:
    """Norm-layer factory ``channels -> module`` for ``norm`` in :data:`NORMS`.

    ``frozen_bn`` (the paper, detectron2 and torchvision with pretrained weights) keeps the
    ImageNet statistics fixed, which is what makes batches of 1-2 images per device workable.
    ``bn``/``syncbn``/``gn`` are trainable, for from-scratch training (e.g. ``depth=10``).
    """
    if norm == "frozen_bn":
        return partial(FrozenBatchNorm2d, eps=eps)
    if norm == "bn":
        return partial(nn.BatchNorm2d, eps=eps)
    if norm == "syncbn":
        return partial(nn.SyncBatchNorm, eps=eps)
    if norm == "gn":
        return lambda channels: nn.GroupNorm(min(gn_groups, channels), channels, eps=eps)
    raise ValueError(f"norm={norm!r}: expected one of {NORMS}")


def resnet_out_channels(depth: int) -> list[int]:
    """The widths of C3, C4, C5 of a ResNet of ``depth`` (10, 18, 34, 50 or 101)."""
    if depth not in _DEPTHS:
        raise ValueError(f"depth={depth}: expected one of {sorted(_DEPTHS)}")
    expansion = _DEPTHS[depth][0].expansion
    return [128 * expansion, 256 * expansion, 512 * expansion]


class ResNetBackbone(nn.Module):
    """torchvision ResNet body without ``avgpool``/``fc``; ``forward`` returns ``[C3, C4, C5]``.

    The torchvision module is kept as ``self.body`` so its parameter names (``body.layer1...``)
    match torchvision's ``BackboneWithFPN`` and ImageNet checkpoints load unchanged.

    Args:
        depth: 10, 18, 34, 50 or 101. 10 is ``ResNet(BasicBlock, [1, 1, 1, 1])``, a fast
            from-scratch CPU option (no published weights).
        weights: ``None``, a local checkpoint path or a torchvision weights name (from the
            torch hub cache, downloaded into it when missing).
        norm: see :func:`make_norm`. ``norm_eps``: its epsilon (torchvision's COCO_V1
            RetinaNet sets 0.0).
        freeze_at: detectron2's convention: 0 trains everything, 1 freezes the stem,
            ``k >= 2`` also freezes ``layer1 .. layer{k-1}`` (2 = torchvision's
            ``trainable_backbone_layers=3``, the default for pretrained training).
    """

    def __init__(
        self,
        *,
        depth: int = 50,
        weights: str | None = None,
        norm: str = "frozen_bn",
        norm_eps: float = 1e-5,
        freeze_at: int = 2,
    ) -> None:
        super().__init__()
        self.out_channels = resnet_out_channels(depth)
        if not 0 <= freeze_at <= 5:
            raise ValueError(f"freeze_at={freeze_at}: expected 0..5")
        block, layers, _ = _DEPTHS[depth]
        body = tv_resnet.ResNet(block, layers, norm_layer=make_norm(norm, norm_eps))
        del body.fc, body.avgpool
        self.body = body
        if weights is not None:
            self._load(weights)
        self.freeze_at = freeze_at
        self._freeze(freeze_at)

    def _load(self, weights: str) -> None:
        state = load_weights(weights)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        ours = self.body.state_dict()
        shapes = [k for k, v in state.items() if k in ours and ours[k].shape != v.shape]
        missing = [k for k in ours if k not in state and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in state if k not in ours and not k.endswith("num_batches_tracked")]
        if missing or unexpected or shapes:
            raise ConfigError(
                f"weights={weights}", "not a checkpoint of this ResNet "
                f"(missing {missing[:3]}, unexpected {unexpected[:3]}, shape {shapes[:3]})"
            )
        self.body.load_state_dict(state, strict=False)

    def _freeze(self, freeze_at: int) -> None:
        """No gradients for the first ``freeze_at`` stages (stem, layer1, ...), and their
        BatchNorm layers become :class:`FrozenBatchNorm2d` (as detectron2 does), so that a
        train-mode forward does not update their running statistics either. GroupNorm keeps
        no statistics; its affine parameters are frozen with the rest."""
        if freeze_at >= 1:
            self.body.bn1 = _frozen_bn(self.body.bn1)
        for i in range(1, freeze_at):
            _freeze_bn_in(getattr(self.body, f"layer{i}"))
        stages = [[self.body.conv1, self.body.bn1]] + [
            [getattr(self.body, f"layer{i}")] for i in range(1, 5)
        ]
        for stage in stages[:freeze_at]:
            for module in stage:
                for p in module.parameters():
                    p.requires_grad_(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x``: ``(B, 3, H, W)`` normalised -> ``[C3 (B,C,H/8,W/8), C4 (/16), C5 (/32)]``."""
        b = self.body
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        x = b.layer1(x)
        c3 = b.layer2(x)
        c4 = b.layer3(c3)
        c5 = b.layer4(c4)
        return [c3, c4, c5]


def _frozen_bn(module: nn.Module) -> nn.Module:
    """``module`` as a :class:`FrozenBatchNorm2d` with its statistics and affine parameters
    when it is a BatchNorm (``bn`` or ``syncbn``), else ``module`` itself."""
    if not isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module
    frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
    frozen.weight.copy_(module.weight.detach())
    frozen.bias.copy_(module.bias.detach())
    frozen.running_mean.copy_(module.running_mean)
    frozen.running_var.copy_(module.running_var)
    return frozen


def _freeze_bn_in(parent: nn.Module) -> None:
    """Replace every BatchNorm below ``parent`` by :func:`_frozen_bn` of it, in place."""
    for name, child in parent.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(parent, name, _frozen_bn(child))
        else:
            _freeze_bn_in(child)

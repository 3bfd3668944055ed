"""torchvision's own RetinaNet built from a retina model/loss config: the reference that
``scripts/train_torchvision.py`` trains beside retina's runs.

What is taken from the retina config: the ResNet body (depth, norm, epsilon, frozen stages,
weights; built by :class:`~retina.modeling.backbone.ResNetBackbone`, so its init is the same
torchvision ``ResNet``'s), the FPN width and P6 input, the head depth (torchvision's heads cut
to ``num_convs`` convs, torchvision's init), the prior, the anchors (torchvision's
``AnchorGenerator`` with sizes ``int(s * 2^(i/n))``), the IoU thresholds, the inference
settings, the pixel normalisation and padding, and the classification loss's gamma/alpha.
Everything else is torchvision's: the per-image foreground normaliser averaged over images,
the L1 box loss on encoded deltas, the matcher, the FPN and its init, the postprocessing.
A setting torchvision's RetinaNet has no argument for (an anchor offset, box-coder weights or
a scale clamp other than its own) is refused by :func:`check_torchvision_config`, never
silently dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.retinanet import (
    RetinaNet,
    RetinaNetClassificationHead,
    RetinaNetHead,
    _sum,
)
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import sigmoid_focal_loss
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from retina.errors import ConfigError
from retina.modeling.backbone import ResNetBackbone, resnet_out_channels
from retina.modeling.build import model_defaults
from retina.modeling.retinanet import LossOutput

__all__ = ["TorchvisionRetinaNet", "AlphaGammaClassificationHead", "build_torchvision_retinanet",
           "check_torchvision_config"]

_FOCAL_TARGETS = ("retina.modeling.losses.FocalLoss", "retina.modeling.FocalLoss")


class AlphaGammaClassificationHead(RetinaNetClassificationHead):
    """torchvision's classification head with the focal loss's ``gamma``/``alpha`` as
    arguments (torchvision fixes 2 / 0.25); ``alpha=None`` is no class weighting.

    ``compute_loss`` is torchvision's, line for line, except for the two numbers: per image
    the summed ``torchvision.ops.sigmoid_focal_loss`` over non-ignored anchors divided by that
    image's foreground count (min 1), averaged over images.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, *,
                 prior_probability: float = 0.01, norm_layer: Any = None,
                 gamma: float = 2.0, alpha: float | None = 0.25) -> None:
        super().__init__(in_channels, num_anchors, num_classes,
                         prior_probability=prior_probability, norm_layer=norm_layer)
        self.gamma = float(gamma)
        self.alpha = -1.0 if alpha is None else float(alpha)  # < 0: no weighting

    def compute_loss(self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor],
                     matched_idxs: list[Tensor]) -> Tensor:
        """Scalar loss; ``cls_logits`` ``(B, R, K)``, ``matched_idxs`` per image ``(R,)``."""
        losses = []
        for target, logits, matched in zip(targets, head_outputs["cls_logits"], matched_idxs,
                                           strict=True):
            fg = matched >= 0
            num_fg = fg.sum()
            gt = torch.zeros_like(logits)
            gt[fg, target["labels"][matched[fg]]] = 1.0
            valid = matched != self.BETWEEN_THRESHOLDS
            loss = sigmoid_focal_loss(logits[valid], gt[valid], alpha=self.alpha,
                                      gamma=self.gamma, reduction="sum")
            losses.append(loss / max(1, num_fg))
        return _sum(losses) / len(targets)


class _NoResizeTransform(GeneralizedRCNNTransform):
    """torchvision's transform without its resize: retina's data pipeline already resized,
    so both implementations see the same pixels (normalise + pad only)."""

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None
               ) -> tuple[Tensor, dict[str, Tensor] | None]:
        return image, target


class TorchvisionRetinaNet(nn.Module):
    """A torchvision ``RetinaNet`` behind retina's model interface.

    Train mode: ``model(images, targets) -> LossOutput({"loss_cls", "loss_box_reg"}, {})``
    (torchvision's loss measures nothing more); eval mode:
    ``model(images) -> [{"boxes" (D,4), "scores" (D,), "labels" (D,)}]``. Images are
    retina's ``(3, H, W)`` uint8 (or float in [0, 1]) tensors; targets keep only ``boxes``
    and ``labels`` (torchvision has no crowd boxes).
    """

    def __init__(self, model: RetinaNet) -> None:
        super().__init__()
        self.model = model

    @staticmethod
    def _float(image: Tensor) -> Tensor:
        return image.float() / 255.0 if image.dtype == torch.uint8 else image.float()

    def forward(self, images: Sequence[Tensor] | Tensor,
                targets: list[dict[str, Tensor]] | None = None) -> Any:
        images = [self._float(im) for im in images]
        if not self.training:
            return self.model(images)
        if targets is None:
            raise ValueError("TorchvisionRetinaNet in train mode needs targets")
        plain = [{"boxes": t["boxes"].float().reshape(-1, 4), "labels": t["labels"].long()}
                 for t in targets]
        losses = self.model(images, plain)
        return LossOutput(
            {"loss_cls": losses["classification"], "loss_box_reg": losses["bbox_regression"]}, {}
        )


def _loss_numbers(loss: Mapping[str, Any]) -> tuple[float, float | None]:
    target = str(loss.get("_target_", ""))
    if target not in _FOCAL_TARGETS:
        raise ConfigError("loss._target_", f"{target!r}: the torchvision reference trains the "
                          "focal-loss family only (loss=focal with loss.gamma, loss.alpha)")
    alpha = loss.get("alpha", 0.25)
    return float(loss.get("gamma", 2.0)), None if alpha is None else float(alpha)


_FIXED_IN_TORCHVISION = {  # retina keys torchvision's RetinaNet has no argument for: its value
    "anchor_offset": 0.0,  # anchor centres on multiples of the stride
    "box_coder_weights": [1.0, 1.0, 1.0, 1.0],
    "scale_clamp": math.log(1000.0 / 16),  # BoxCoder's bbox_xform_clip
}


def check_torchvision_config(model: Mapping[str, Any], loss: Mapping[str, Any]) -> None:
    """Refuse, before anything is built or written, a model/loss config that torchvision's
    RetinaNet would not follow (the checks of :func:`build_torchvision_retinanet`).

    Raises:
        ConfigError: naming the key (a loss outside the focal family, no prior, P6 from a
            C5 as wide as the FPN, an anchor offset, box-coder weights or scale clamp other
            than torchvision's, an unknown head norm).
    """
    _loss_numbers(loss)
    m = {**model_defaults(), **model}
    for key, fixed in _FIXED_IN_TORCHVISION.items():
        value = m[key]
        same = (list(map(float, value)) == fixed if isinstance(fixed, list)
                else math.isclose(float(value), fixed, rel_tol=1e-9))
        if not same:
            raise ConfigError(f"model.{key}", f"{value!r}: torchvision's RetinaNet always uses "
                              f"{fixed!r}; the reference cannot train another value")
    if m["head_norm"] not in (None, "gn"):
        raise ConfigError("model.head_norm", f"{m['head_norm']!r}: expected null or 'gn'")
    if m["prior_prob"] is None:
        raise ConfigError("model.prior_prob", "null: torchvision's head always sets a prior")
    c5 = resnet_out_channels(int(m["depth"]))[-1]
    if str(m["p6_from"]) == "c5" and c5 == int(m["fpn_channels"]):
        raise ConfigError("model.p6_from", "c5 with C5 as wide as the FPN: torchvision's "
                          "LastLevelP6P7 would read P5")


def build_torchvision_retinanet(model: Mapping[str, Any], loss: Mapping[str, Any],
                                num_classes: int) -> TorchvisionRetinaNet:
    """torchvision's RetinaNet matching the retina ``model``/``loss`` config nodes.

    Args:
        model: the keys of :func:`retina.modeling.build_retinanet` (``configs/model/*``).
        loss: the ``loss`` node; only the focal family (``gamma``, ``alpha``).
        num_classes: K (torchvision's labels ``0..K-1``, no background class).

    Raises:
        ConfigError: see :func:`check_torchvision_config`.
    """
    check_torchvision_config(model, loss)
    gamma, alpha = _loss_numbers(loss)
    m = {**model_defaults(), **model}  # keys left out: the part constructors' defaults
    body = ResNetBackbone(depth=int(m["depth"]), weights=m["weights"],
                          norm=str(m["norm"]),
                          norm_eps=float(m["norm_eps"]),
                          freeze_at=int(m["freeze_at"]))
    channels = int(m["fpn_channels"])
    c5 = body.out_channels[-1]
    p6_from = str(m["p6_from"])
    backbone = BackboneWithFPN(
        body.body, return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
        in_channels_list=list(body.out_channels), out_channels=channels,
        extra_blocks=LastLevelP6P7(c5 if p6_from == "c5" else channels, channels),
    )
    num_scales = int(m["num_scales"])
    ratios = tuple(float(r) for r in m["aspect_ratios"])
    sizes = tuple(tuple(int(s * 2 ** (i / num_scales)) for i in range(num_scales))
                  for s in m["anchor_sizes"])
    anchors = AnchorGenerator(sizes, (ratios,) * len(sizes))
    num_anchors = anchors.num_anchors_per_location()[0]
    norm = m["head_norm"]
    norm_layer = partial(nn.GroupNorm, 32) if norm == "gn" else None
    head = RetinaNetHead(channels, num_anchors, num_classes, norm_layer=norm_layer)
    prior = m["prior_prob"]
    if gamma != 2.0 or alpha != 0.25 or prior != 0.01:
        head.classification_head = AlphaGammaClassificationHead(
            channels, num_anchors, num_classes, prior_probability=float(prior),
            norm_layer=norm_layer, gamma=gamma, alpha=alpha)
    num_convs = int(m["num_convs"])
    head.classification_head.conv = head.classification_head.conv[:num_convs]
    head.regression_head.conv = head.regression_head.conv[:num_convs]
    mean = [float(v) for v in m["pixel_mean"]]
    std = [float(v) for v in m["pixel_std"]]
    tv = RetinaNet(
        backbone, num_classes, anchor_generator=anchors, head=head, image_mean=mean,
        image_std=std, score_thresh=float(m["score_thresh"]),
        nms_thresh=float(m["nms_thresh"]),
        detections_per_img=int(m["detections_per_img"]),
        fg_iou_thresh=float(m["fg_iou_thresh"]),
        bg_iou_thresh=float(m["bg_iou_thresh"]),
        topk_candidates=int(m["topk_candidates"]),
    )
    tv.proposal_matcher = det_utils.Matcher(
        tv.proposal_matcher.high_threshold, tv.proposal_matcher.low_threshold,
        allow_low_quality_matches=bool(m["allow_low_quality_matches"]))
    tv.transform = _NoResizeTransform(
        800, 1333, mean, std, size_divisible=int(m["size_divisibility"]))
    return TorchvisionRetinaNet(tv)

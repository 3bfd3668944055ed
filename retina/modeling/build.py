"""``build_retinanet``: the flat keyword builder that ``configs/model/*.yaml`` target."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from retina.modeling.anchors import AnchorGenerator
from retina.modeling.backbone import ResNetBackbone
from retina.modeling.box_coder import DEFAULT_SCALE_CLAMP, BoxCoder
from retina.modeling.fpn import FPN
from retina.modeling.head import RetinaNetHead
from retina.modeling.losses import FocalLoss
from retina.modeling.matcher import Matcher
from retina.modeling.retinanet import IMAGENET_MEAN, IMAGENET_STD, RetinaNet
from retina.utils.checks import check_int, check_positive_list

__all__ = ["build_retinanet"]


def build_retinanet(
    *,
    num_classes: int,
    cls_loss: Callable[..., Tensor] | None = None,
    depth: int = 50,
    weights: str | None = None,
    norm: str = "frozen_bn",
    norm_eps: float = 1e-5,
    freeze_at: int = 2,
    fpn_channels: int = 256,
    p6_from: str = "c5",
    num_convs: int = 4,
    head_norm: str | None = None,
    prior_prob: float | None = 0.01,
    anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
    num_scales: int = 3,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    anchor_offset: float = 0.0,
    torchvision_anchors: bool = False,
    fg_iou_thresh: float = 0.5,
    bg_iou_thresh: float = 0.4,
    allow_low_quality_matches: bool = True,
    box_coder_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    scale_clamp: float = DEFAULT_SCALE_CLAMP,
    box_loss: str = "smooth_l1",
    smooth_l1_beta: float = 0.1,
    loss_normalizer: str = "batch",
    normalizer_momentum: float = 0.9,
    score_thresh: float = 0.05,
    topk_candidates: int = 1000,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    pixel_mean: Sequence[float] = IMAGENET_MEAN,
    pixel_std: Sequence[float] = IMAGENET_STD,
    size_divisibility: int = 128,
) -> RetinaNet:
    """Build a RetinaNet from flat keyword arguments (one YAML key each).

    Defaults follow the paper where it is explicit, else detectron2:
    ResNet-50, frozen BN, stem + res2 frozen (``freeze_at=2``), FPN 256 with P6 from C5,
    4 x 256 head convs without norm, prior pi = 0.01 (``None`` -> bias 0), float anchor sizes
    ``32..512 x 2^(i/3)`` with offset 0, IoU 0.5 / 0.4 with low-quality matches, unit box
    coder weights, smooth-L1 beta 0.1 (detectron2; torchvision v1 uses L1, v2 GIoU),
    focal loss gamma 2 / alpha 0.25 normalised by the batch's foreground count, inference
    0.05 / 1000 / 0.5 / 100 detections (torchvision keeps 300; COCO AP counts 100).
    ``cls_loss=None`` means ``FocalLoss(gamma=2.0, alpha=0.25)``.

    ``depth=10`` with ``norm="bn"`` or ``"gn"`` and small ``fpn_channels``/``num_convs`` is
    the fast from-scratch CPU option. ``norm_eps`` is the backbone norm's epsilon
    (torchvision's COCO_V1 RetinaNet weights need 0.0). ``head_norm``: ``None`` or ``"gn"``.
    ``scale_clamp``: the largest decoded log width/height ratio (:class:`BoxCoder`;
    log(1000/16) as torchvision and detectron2). ``normalizer_momentum``: the EMA momentum of
    ``loss_normalizer="ema"`` (detectron2's 0.9).
    """
    check_int("num_classes", num_classes)
    check_int("fpn_channels", fpn_channels)
    if len(check_positive_list("anchor_sizes", anchor_sizes)) != 5:
        raise ValueError(f"anchor_sizes={list(anchor_sizes)}: expected 5 levels (P3-P7)")
    strides = tuple(8 * 2**i for i in range(len(anchor_sizes)))
    backbone = ResNetBackbone(
        depth=depth, weights=weights, norm=norm, norm_eps=norm_eps, freeze_at=freeze_at
    )
    fpn = FPN(backbone.out_channels, fpn_channels, p6_from=p6_from)
    anchor_generator = AnchorGenerator(
        sizes=anchor_sizes,
        strides=strides,
        num_scales=num_scales,
        aspect_ratios=aspect_ratios,
        offset=anchor_offset,
        torchvision_compat=torchvision_anchors,
    )
    head = RetinaNetHead(
        in_channels=fpn_channels,
        num_anchors=anchor_generator.num_anchors,
        num_classes=num_classes,
        num_convs=num_convs,
        norm=head_norm,
        prior_prob=prior_prob,
    )
    return RetinaNet(
        backbone=backbone,
        fpn=fpn,
        head=head,
        anchor_generator=anchor_generator,
        matcher=Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches),
        box_coder=BoxCoder(box_coder_weights, scale_clamp=scale_clamp),
        num_classes=num_classes,
        cls_loss=cls_loss if cls_loss is not None else FocalLoss(gamma=2.0, alpha=0.25),
        box_loss=box_loss,
        smooth_l1_beta=smooth_l1_beta,
        loss_normalizer=loss_normalizer,
        normalizer_momentum=normalizer_momentum,
        score_thresh=score_thresh,
        topk_candidates=topk_candidates,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
        pixel_mean=pixel_mean,
        pixel_std=pixel_std,
        size_divisibility=size_divisibility,
    )

"""Convert torchvision RetinaNet models and state dicts into this project's ``RetinaNet``.

Parity notes (what is and is not reproduced):

- Weights, anchors (``torchvision_anchors=True``: integer-truncated sizes, rounded cell
  anchors, offset 0), matcher thresholds, box coder, box loss (v1: L1, v2: GIoU), the focal
  loss (gamma 2, alpha 0.25) normalised per image, inference settings and the pixel
  normalisation are all carried over, so on the same padded input the detections agree.
- torchvision *resizes* inputs (``GeneralizedRCNNTransform``, shorter side 800) and pads to
  a multiple of 32; this project leaves resizing to the data pipeline and pads to 128 (P7's
  stride). Outputs are identical whenever the image sizes are multiples of 128 and
  torchvision's resize is a no-op; otherwise torchvision's P6/P7 anchor strides become
  ``size // grid`` (e.g. 114 instead of 128 for 800 px) and border padding differs, so the
  two differ slightly there (ours keeps the exact stride).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from retina.modeling.build import build_retinanet
from retina.modeling.losses import FocalLoss
from retina.modeling.retinanet import RetinaNet

__all__ = [
    "from_torchvision", "convert_state_dict", "infer_config_from_state_dict", "coco_categories",
    "select_classes", "TORCHVISION_UNUSED",
]  # fmt: skip

TORCHVISION_UNUSED = ("__background__", "N/A")
"""Names of the slots of torchvision's 91-way COCO head that are no COCO category: output 0
and the 10 ids COCO 2017 skips (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)."""

_RENAMES = (
    (r"^backbone\.body\.", "backbone.body."),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.0\.", r"fpn.lateral_convs.\1."),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.0\.", r"fpn.output_convs.\1."),
    (r"^backbone\.fpn\.extra_blocks\.(p6|p7)\.", r"fpn.\1."),
    (r"^head\.classification_head\.conv\.", "head.cls_subnet."),
    (r"^head\.classification_head\.cls_logits\.", "head.cls_score."),
    (r"^head\.regression_head\.conv\.", "head.bbox_subnet."),
    (r"^head\.regression_head\.bbox_reg\.", "head.bbox_pred."),
)
# torchvision < 0.13 head layout ("conv.{2i}.weight" in a flat Sequential with ReLUs)
_OLD_HEAD = re.compile(r"^(head\.(?:classification|regression)_head\.conv)\.(\d+)\.(weight|bias)$")
_DEPTH_OF = {(3, 4, 6, 3, True): 50, (3, 4, 23, 3, True): 101, (2, 2, 2, 2, False): 18,
             (3, 4, 6, 3, False): 34, (1, 1, 1, 1, False): 10}  # fmt: skip
_TV_NUM_ANCHORS = 9


def convert_state_dict(
    state: Mapping[str, Tensor], keep_num_batches_tracked: bool = False
) -> dict[str, Tensor]:
    """Rename a torchvision RetinaNet state dict to this project's parameter names.

    Accepts both the current head layout and the old flat one of the published COCO_V1
    file. Raises ``ValueError`` naming the first key it does not recognise.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked") and not keep_num_batches_tracked:
            continue
        old = _OLD_HEAD.match(key)
        if old:
            key = f"{old.group(1)}.{int(old.group(2)) // 2}.0.{old.group(3)}"
        for pattern, repl in _RENAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            raise ValueError(f"state dict key {key!r} is not part of a torchvision RetinaNet")
    return out


def coco_categories() -> tuple[list[int], list[str]]:
    """COCO 2017's 80 category ids and names, in the order of torchvision's 91-way head
    (whose output ``i`` is category id ``i``), without the :data:`TORCHVISION_UNUSED` slots.
    The names are those of ``instances_val2017.json``."""
    from torchvision.models.detection.retinanet import _COCO_CATEGORIES

    kept = [(i, n) for i, n in enumerate(_COCO_CATEGORIES) if n not in TORCHVISION_UNUSED]
    return [i for i, _ in kept], [n for _, n in kept]


def select_classes(
    state: Mapping[str, Tensor], keep: Sequence[int], num_classes: int
) -> dict[str, Tensor]:
    """A converted state dict whose classification head only has the outputs ``keep``.

    The last conv ``head.cls_score`` has ``A * num_classes`` output channels, anchor-major
    (channel ``a * num_classes + k``); the rows of every anchor's kept classes are kept in
    order, so new label ``j`` is old output ``keep[j]`` with the same weights and bias.
    """
    out = dict(state)
    weight, bias = state["head.cls_score.weight"], state["head.cls_score.bias"]
    if weight.shape[0] % num_classes or not all(0 <= k < num_classes for k in keep):
        raise ValueError(f"cannot keep classes {list(keep)[:5]}... of a {num_classes}-class head "
                         f"with {weight.shape[0]} outputs")  # fmt: skip
    anchors = weight.shape[0] // num_classes
    rows = torch.tensor([a * num_classes + k for a in range(anchors) for k in keep])
    out["head.cls_score.weight"] = weight[rows].clone()
    out["head.cls_score.bias"] = bias[rows].clone()
    return out


def infer_config_from_state_dict(state: Mapping[str, Tensor]) -> dict:
    """``build_retinanet`` keyword arguments describing a torchvision RetinaNet state dict.

    v1 (``retinanet_resnet50_fpn``) is recognised by P6 reading 256 channels (P5) and heads
    without GroupNorm; v2 by P6 on C5 (2048) and GroupNorm heads. The backbone norm epsilon
    is *not* stored in a state dict: v1's COCO_V1 weights need ``norm_eps=0.0`` (set here),
    v2's use BatchNorm's 1e-5.
    """
    state = convert_state_dict(state)
    try:
        p6_in = state["fpn.p6.weight"].shape[1]
        num_classes = state["head.cls_score.weight"].shape[0] // _TV_NUM_ANCHORS
    except KeyError as err:
        raise ValueError(f"not a torchvision RetinaNet state dict (no {err.args[0]})") from err
    gn = "head.cls_subnet.0.1.weight" in state
    blocks = tuple(
        len({k.split(".")[3] for k in state if k.startswith(f"backbone.body.layer{i}.")})
        for i in range(1, 5)
    )
    bottleneck = "backbone.body.layer1.0.conv3.weight" in state
    depth = _DEPTH_OF.get((*blocks, bottleneck))
    if depth is None:
        raise ValueError(f"unsupported ResNet layout {blocks} (bottleneck={bottleneck})")
    v2 = p6_in != 256
    return {
        "num_classes": int(num_classes),
        "depth": depth,
        "norm": "frozen_bn",
        "norm_eps": 1e-5 if v2 else 0.0,
        "freeze_at": 2,
        "fpn_channels": 256,
        "p6_from": "c5" if v2 else "p5",
        "num_convs": len({k.split(".")[2] for k in state if k.startswith("head.cls_subnet.")}),
        "head_norm": "gn" if gn else None,
        "prior_prob": 0.01,
        "torchvision_anchors": True,
        "box_loss": "giou" if v2 else "l1",
        "loss_normalizer": "image",
        "detections_per_img": 300,
    }


def _norm_of(body: nn.Module) -> tuple[str, float]:
    from torchvision.ops import FrozenBatchNorm2d

    bn = body.bn1
    if isinstance(bn, FrozenBatchNorm2d):
        return "frozen_bn", float(bn.eps)
    if isinstance(bn, nn.BatchNorm2d):
        return "bn", float(bn.eps)
    raise ValueError(f"from_torchvision: unsupported backbone norm {type(bn).__name__}")


def _anchor_args(generator: nn.Module) -> dict:
    sizes = [tuple(s) for s in generator.sizes]
    bases = [s[0] for s in sizes]
    num_scales = len(sizes[0])
    expected = [tuple(int(b * 2 ** (i / num_scales)) for i in range(num_scales)) for b in bases]
    ratios = {tuple(r) for r in generator.aspect_ratios}
    if len(sizes) != 5 or sizes != expected or len(ratios) != 1:
        raise ValueError(
            f"from_torchvision: anchor sizes {sizes} / ratios {generator.aspect_ratios} are not "
            "the RetinaNet layout (5 levels, x * 2^(i/n) truncated, shared ratios)"
        )
    return {
        "anchor_sizes": tuple(bases),
        "num_scales": num_scales,
        "aspect_ratios": tuple(next(iter(ratios))),
        "anchor_offset": 0.0,
        "torchvision_anchors": True,
    }


def from_torchvision(tv_model: nn.Module) -> RetinaNet:
    """Our ``RetinaNet`` with the weights, anchors and settings of a torchvision RetinaNet.

    Args:
        tv_model: ``torchvision.models.detection.RetinaNet`` built by
            ``retinanet_resnet50_fpn`` (v1) or ``retinanet_resnet50_fpn_v2`` (any
            ``num_classes``, BatchNorm2d or FrozenBatchNorm2d with its eps).

    Returns:
        the converted model on the same device, in the same train/eval mode. Its training
        loss is torchvision's (focal loss gamma 2 / alpha 0.25 normalised per image, L1 or
        GIoU box loss); its detections match torchvision's on the same padded images.
    """
    from torchvision.models.detection import RetinaNet as TVRetinaNet

    if not isinstance(tv_model, TVRetinaNet):
        raise TypeError(f"from_torchvision: expected a torchvision RetinaNet, got {type(tv_model)}")
    state = tv_model.state_dict()
    cfg = infer_config_from_state_dict(state)
    body = tv_model.backbone.body
    norm, eps = _norm_of(body)
    stages = [[body.conv1]] + [[getattr(body, f"layer{i}")] for i in range(1, 5)]
    freeze_at = 0
    for stage in stages:
        if any(p.requires_grad for m in stage for p in m.parameters()):
            break
        freeze_at += 1
    matcher = tv_model.proposal_matcher
    transform = tv_model.transform
    box_loss = tv_model.head.regression_head._loss_type
    if box_loss not in ("l1", "smooth_l1", "giou"):
        raise ValueError(f"from_torchvision: unsupported torchvision box loss {box_loss!r}")
    cfg.update(
        norm=norm,
        norm_eps=eps,
        freeze_at=freeze_at,
        fg_iou_thresh=matcher.high_threshold,
        bg_iou_thresh=matcher.low_threshold,
        allow_low_quality_matches=matcher.allow_low_quality_matches,
        box_coder_weights=tuple(tv_model.box_coder.weights),
        box_loss=box_loss,
        smooth_l1_beta=1.0,  # torchvision's _box_loss default beta
        score_thresh=tv_model.score_thresh,
        topk_candidates=tv_model.topk_candidates,
        nms_thresh=tv_model.nms_thresh,
        detections_per_img=tv_model.detections_per_img,
        pixel_mean=tuple(float(v) for v in transform.image_mean),
        pixel_std=tuple(float(v) for v in transform.image_std),
        scale_clamp=float(tv_model.box_coder.bbox_xform_clip),
        cls_loss=FocalLoss(gamma=2.0, alpha=0.25),
        **_anchor_args(tv_model.anchor_generator),
    )
    model = build_retinanet(**cfg)
    converted = convert_state_dict(state, keep_num_batches_tracked=norm == "bn")
    model.load_state_dict(converted, strict=False)
    missing, unexpected = _diff(model, converted)
    if missing or unexpected:
        raise ValueError(f"from_torchvision: missing {missing[:3]}, unexpected {unexpected[:3]}")
    ref = next(tv_model.parameters())
    return model.to(device=ref.device).train(tv_model.training)


def _diff(model: nn.Module, state: Mapping[str, Tensor]) -> tuple[list[str], list[str]]:
    ours = {k for k in model.state_dict() if not k.startswith(("pixel_", "normalizer_ema"))}
    return sorted(ours - set(state)), sorted(set(state) - ours)


"""RetinaNet modules: backbone, FPN, anchors, head, matcher, box coder, losses, meta-arch."""

from retina.modeling.anchors import AnchorGenerator
from retina.modeling.backbone import ResNetBackbone
from retina.modeling.box_coder import BoxCoder
from retina.modeling.build import build_retinanet
from retina.modeling.fpn import FPN
from retina.modeling.head import RetinaNetHead
from retina.modeling.losses import FocalLoss, FocalLossStar, OHEMLoss, box_regression_loss
from retina.modeling.matcher import Matcher
from retina.modeling.retinanet import RetinaNet

__all__ = [
    "AnchorGenerator",
    "BoxCoder",
    "FPN",
    "FocalLoss",
    "FocalLossStar",
    "Matcher",
    "OHEMLoss",
    "ResNetBackbone",
    "RetinaNet",
    "RetinaNetHead",
    "box_regression_loss",
    "build_retinanet",
]

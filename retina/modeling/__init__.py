"""RetinaNet modules: backbone, FPN, anchors, head, matcher, assignment, box coder, losses,
meta-arch."""

from retina.modeling.anchors import AnchorGenerator
from retina.modeling.assign import Assignment, assign_anchors
from retina.modeling.backbone import ResNetBackbone
from retina.modeling.box_coder import BoxCoder
from retina.modeling.build import build_retinanet
from retina.modeling.fpn import FPN
from retina.modeling.head import RetinaNetHead
from retina.modeling.losses import FocalLoss, FocalLossStar, OHEMLoss, box_regression_loss
from retina.modeling.matcher import Matcher
from retina.modeling.retinanet import LossOutput, RetinaNet

__all__ = [
    "AnchorGenerator",
    "Assignment",
    "BoxCoder",
    "FPN",
    "FocalLoss",
    "FocalLossStar",
    "LossOutput",
    "Matcher",
    "OHEMLoss",
    "ResNetBackbone",
    "RetinaNet",
    "RetinaNetHead",
    "assign_anchors",
    "box_regression_loss",
    "build_retinanet",
]

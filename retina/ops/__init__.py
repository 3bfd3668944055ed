"""Pure tensor operations: the focal loss family and box utilities."""

from retina.ops.focal import (
    focal_loss_star,
    sigmoid_focal_loss,
    sigmoid_focal_loss_from_labels,
)

__all__ = [
    "focal_loss_star",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_from_labels",
]

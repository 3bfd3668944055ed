"""retina: RetinaNet-style dense detection with the focal loss family."""

__version__ = "0.1.0"

"""Data: COCO-format datasets, transforms, batch collation, synthetic shapes and validation.

Importing this package is light: albumentations and pycocotools load only when used.
"""

from retina.data.batching import aspect_ratio_group_ids, collate_detection
from retina.data.coco import CocoDetection, detections_to_coco_results
from retina.data.images import image_size, read_image
from retina.data.shapes import make_shapes_dataset
from retina.data.transforms import DetectionTransform, build_transforms
from retina.data.validate import Problem, check_coco_dict, validate_coco
from retina.errors import DataError

__all__ = [
    "CocoDetection",
    "DataError",
    "DetectionTransform",
    "Problem",
    "aspect_ratio_group_ids",
    "build_transforms",
    "check_coco_dict",
    "collate_detection",
    "detections_to_coco_results",
    "image_size",
    "make_shapes_dataset",
    "read_image",
    "validate_coco",
]

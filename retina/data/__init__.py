"""Data: COCO-format datasets, transforms, batching, synthetic shapes and validation.

Importing this package is light: albumentations and pycocotools load only when used.
"""

from retina.data.batching import (
    AspectRatioGroupedBatchSampler,
    DistributedShuffleSampler,
    aspect_ratio_group_ids,
    collate_detection,
    make_generator,
    pad_images,
    seed_worker,
)
from retina.data.coco import CocoDetection, detections_to_coco_results
from retina.data.images import image_size, read_image
from retina.data.shapes import make_shapes_dataset
from retina.data.transforms import DetectionTransform, build_transforms
from retina.data.validate import Problem, check_coco_dict, validate_coco
from retina.errors import DataError

__all__ = [
    "AspectRatioGroupedBatchSampler",
    "CocoDetection",
    "DataError",
    "DetectionTransform",
    "DistributedShuffleSampler",
    "Problem",
    "aspect_ratio_group_ids",
    "build_transforms",
    "check_coco_dict",
    "collate_detection",
    "detections_to_coco_results",
    "image_size",
    "make_generator",
    "make_shapes_dataset",
    "pad_images",
    "read_image",
    "seed_worker",
    "validate_coco",
]

"""Training engine parts: checkpoints and COCO evaluation.

Imports only torch; pycocotools is imported when an evaluation actually runs.
"""

from retina.engine.checkpoint import (
    CheckpointError,
    find_resume_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)
from retina.engine.evaluation import (
    METRIC_KEYS,
    evaluate_detections,
    format_metrics_table,
    run_inference,
)

__all__ = [
    "METRIC_KEYS",
    "evaluate_detections",
    "format_metrics_table",
    "run_inference",
    "CheckpointError",
    "find_resume_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model_state",
    "save_checkpoint",
]

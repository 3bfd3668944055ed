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

__all__ = [
    "CheckpointError",
    "find_resume_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_model_state",
    "save_checkpoint",
]

"""Running an exported ONNX model with onnxruntime where retina runs a checkpoint
(``retina-eval``, ``retina-predict``): :func:`load_detector` picks by the file's suffix.

:class:`OnnxDetector` answers like :class:`~retina.modeling.RetinaNet` in eval mode (a list of
``{"boxes", "scores", "labels"}`` with contiguous labels), so the evaluator and the predictor
run it unchanged; the preprocessing (``min_size``/``max_size``) comes from the model's
metadata through the same data config a checkpoint carries.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from retina.errors import CheckpointError, ConfigError
from retina.export.exporter import GRAPH_VERSION
from retina.export.graph import INPUT_NAME
from retina.utils.io import require_regular_file

__all__ = ["OnnxDetector", "load_detector", "load_onnx", "read_onnx_metadata"]

_REQUIRED = ("retina.graph", "class_names", "score_thresh", "retina.config")


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata ``retina-export`` wrote into an ONNX model.

    Raises:
        CheckpointError: one line for an unreadable file, a file that is not ONNX, or an ONNX
            model ``retina-export`` did not write (no or other retina metadata).
    """
    import onnx

    path = require_regular_file(path, "ONNX model", CheckpointError)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises DecodeError and others for garbage
        raise CheckpointError(f"{path}: not a readable ONNX model ({type(err).__name__})") from err
    props = {p.key: p.value for p in proto.metadata_props}
    missing = [key for key in _REQUIRED if key not in props]
    if missing:
        raise CheckpointError(
            f"{path}: not an ONNX model written by retina-export (no {', '.join(missing)} "
            "in its metadata); export a checkpoint with retina-export format=onnx"
        )
    try:
        metadata = {key: json.loads(value) for key, value in props.items()}
    except ValueError as err:
        raise CheckpointError(f"{path}: retina metadata is not JSON ({err})") from err
    if metadata["retina.graph"] != GRAPH_VERSION:
        raise CheckpointError(
            f"{path}: graph version {metadata['retina.graph']!r}, this retina reads "
            f"{GRAPH_VERSION!r}; export the checkpoint again"
        )
    return metadata


class OnnxDetector(nn.Module):
    """An onnxruntime session behind RetinaNet's eval-mode interface.

    Args:
        session: ``onnxruntime.InferenceSession`` of a ``retina-export`` model.
        cat_ids: category id of each contiguous label (output labels are mapped back).
        score_thresh: keep detections scoring at least this (None: all the graph returns).
            Filtering after the graph equals a higher threshold inside it: NMS and the
            per-image cut only ever drop lower-scored boxes.
    """

    def __init__(
        self, session: Any, cat_ids: Sequence[int], score_thresh: float | None = None
    ) -> None:
        super().__init__()
        self.session = session
        self.label_of = {int(c): i for i, c in enumerate(cat_ids)}
        self.score_thresh = score_thresh

    def forward(self, images: Tensor | Sequence[Tensor]) -> list[dict[str, Tensor]]:
        """``images``: ``(3, H, W)`` tensors, uint8 or float in [0, 1] (as RetinaNet takes).
        Images of one size run as one batch; otherwise one by one (no padding of its own)."""
        images = list(images)
        if len({tuple(im.shape) for im in images}) == 1:
            groups = [images]
        else:
            groups = [[im] for im in images]
        results = []
        for group in groups:
            batch = torch.stack([self._pixels(im) for im in group]).numpy()
            boxes, scores, labels, num = self.session.run(None, {INPUT_NAME: batch})
            for i in range(len(group)):
                results.append(self._detections(boxes[i], scores[i], labels[i], int(num[i])))
        return results

    @staticmethod
    def _pixels(image: Tensor) -> Tensor:
        """0-255 float32, the graph's input (uint8 as is, float in [0, 1] times 255)."""
        image = image.detach().cpu()
        if image.dtype == torch.uint8:
            return image.to(torch.float32)
        return image.to(torch.float32) * 255.0

    def _detections(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    num: int) -> dict[str, Tensor]:  # fmt: skip
        keep = np.arange(num)
        if self.score_thresh is not None:
            keep = keep[scores[:num] >= self.score_thresh]
        return {
            "boxes": torch.from_numpy(boxes[keep].copy()),
            "scores": torch.from_numpy(scores[keep].copy()),
            "labels": torch.tensor([self.label_of[int(c)] for c in labels[keep]],
                                   dtype=torch.int64),
        }  # fmt: skip


def load_onnx(
    path: str | Path, overrides: Mapping[str, Any] | None = None
) -> tuple[OnnxDetector, dict]:
    """An :class:`OnnxDetector` and a checkpoint-like ``state`` (``config`` with the stored
    model/loss/data nodes, ``cat_ids``, ``class_names``, ``iteration``) from its metadata.

    ``overrides`` may hold ``score_thresh`` at or above the exported one.

    Raises:
        CheckpointError: see :func:`read_onnx_metadata`; ConfigError: a lower threshold.
    """
    import onnxruntime

    metadata = read_onnx_metadata(path)
    names = metadata["class_names"]
    cat_ids = [int(c) for c in names]
    thresh = (overrides or {}).get("score_thresh")
    if thresh is not None and thresh < metadata["score_thresh"]:
        raise ConfigError(
            "score_thresh", f"{thresh} is below the threshold exported into {path} "
            f"({metadata['score_thresh']}); export again with retina-export score_thresh={thresh}",
        )  # fmt: skip
    config = dict(metadata["retina.config"] or {})
    data = dict(config.get("data") or {})
    if metadata.get("min_size") is not None:  # the metadata's sizes rule the preprocessing
        resize = dict(data.get("val_transforms") or {})
        resize.update(min_size=metadata["min_size"], max_size=metadata["max_size"])
        data["val_transforms"] = resize
    config["data"] = data or None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own error types
        raise CheckpointError(f"{path}: onnxruntime cannot load it ({err})") from err
    state = {
        "config": config, "cat_ids": cat_ids, "class_names": [names[str(c)] for c in cat_ids],
        "iteration": int(metadata.get("retina.iteration", -1)),
    }  # fmt: skip
    return OnnxDetector(session, cat_ids, thresh), state


def load_detector(path: str, overrides: Mapping[str, Any] | None = None) -> tuple[nn.Module, dict]:
    """A checkpoint's model (:func:`retina.engine.inference.load_for_inference`) or, for a
    ``.onnx`` file, its :class:`OnnxDetector`; with the (checkpoint-like) state."""
    if Path(path).suffix.lower() == ".onnx":
        return load_onnx(path, overrides)
    from retina.engine.inference import load_for_inference

    return load_for_inference(path, overrides)

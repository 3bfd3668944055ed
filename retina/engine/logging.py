"""Training-run logging: TensorBoard scalars and images, a progress bar, ``metrics.json``.

Only rank 0 writes; on other ranks every method is a no-op, so the loop calls them
unconditionally. Tag names are stable: ``train/loss_cls``, ``train/loss_box_reg``,
``train/lr``, ``train/num_pos``, ``train/img_per_s``, ``val/AP``, ``val/AP50``, ...
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from retina.engine.evaluation import METRIC_KEYS
from retina.utils.io import write_json_atomic

log = logging.getLogger("retina.train")


class RunLogger:
    """TensorBoard writer + tqdm progress bar for one run (inactive on ranks other than 0).

    Args:
        run_dir: the run directory; events go to ``run_dir/tensorboard``.
        max_iter: total iterations (the bar's length and ETA).
        start_iter: iteration the run starts or resumes at.
        enabled: false on non-zero ranks.
        progress_bar: show the tqdm bar (on stderr).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        max_iter: int,
        start_iter: int = 0,
        enabled: bool = True,
        progress_bar: bool = True,
    ) -> None:
        self.enabled = enabled
        self.writer = None
        self.bar = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(
            log_dir=str(Path(run_dir) / "tensorboard"), purge_step=start_iter
        )
        if progress_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=max_iter, initial=start_iter, desc="train", unit="it",
                            dynamic_ncols=True, mininterval=1.0)  # fmt: skip

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """Write scalars, e.g. ``{"train/loss_cls": 0.3}``; non-finite values are skipped."""
        if self.writer is None:
            return
        for tag, value in values.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(tag, value, step)

    def images(self, tag: str, images: Sequence[torch.Tensor], step: int) -> None:
        """Write uint8 ``(3, H, W)`` images as ``tag/0``, ``tag/1``, ..."""
        if self.writer is None:
            return
        for i, image in enumerate(images):
            self.writer.add_image(f"{tag}/{i}", image, step, dataformats="CHW")

    def metrics(self, metrics: Mapping[str, Any], step: int, prefix: str = "val") -> None:
        """Write the COCO summary numbers (percent) and per-category AP."""
        self.scalars({f"{prefix}/{k}": metrics[k] for k in METRIC_KEYS if k in metrics}, step)
        per_cat = metrics.get("per_category") or {}
        self.scalars({f"{prefix}_per_category/{name}": ap for name, ap in per_cat.items()}, step)

    def progress(self, iteration: int, postfix: Mapping[str, float]) -> None:
        """Advance the bar to ``iteration`` (1-based count of finished iterations)."""
        if self.bar is None:
            return
        self.bar.update(iteration - self.bar.n)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def write(self, message: str) -> None:
        """Log a line without breaking the progress bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.clear()
        log.info(message)
        if self.bar is not None:
            self.bar.refresh()

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def write_metrics_json(
    path: str | os.PathLike, metrics: Mapping[str, Any], config: Mapping[str, Any], **extra: Any
) -> Path:
    """Write ``metrics.json``: the COCO metrics in percent at the top level, plus ``config``
    (the resolved config) and any ``extra`` entries (e.g. ``iteration``)."""
    payload = {**dict(metrics), **extra, "config": dict(config)}
    # Round-trip through json with the tensor-aware encoder, then write atomically (a full
    # disk raises ResultsError and leaves no temporary file).
    payload = json.loads(json.dumps(payload, default=_jsonable))
    return write_json_atomic(path, payload, indent=2)


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

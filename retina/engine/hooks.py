"""The training run's hooks: logging, periodic evaluation, periodic checkpoints."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from retina.engine.logging import RunLogger
from retina.engine.trainer import Hook, Trainer, unwrap
from retina.utils.vis import draw_detections_chw

log = logging.getLogger("retina.train")


class LogHook(Hook):
    """Progress bar every step; TensorBoard ``train/*`` scalars every ``period`` steps:
    everything in :attr:`Trainer.last` (losses, ``lr``, ``grad_norm`` and the statistics the
    loss returned, e.g. ``num_pos``, ``normalizer``, ``num_pos_p3``).

    ``train/img_per_s`` is measured over the whole period (data loading included).
    """

    def __init__(self, logger: RunLogger, period: int) -> None:
        self.logger = logger
        self.period = period
        self._t0 = time.perf_counter()
        self._seen0 = 0
        self._rate = 0.0

    def before_train(self, trainer: Trainer) -> None:
        self._t0, self._seen0 = time.perf_counter(), trainer.images_seen

    def after_step(self, trainer: Trainer) -> None:
        last = trainer.last
        now = time.perf_counter()
        elapsed = now - self._t0
        if trainer.iteration % self.period == 0 or trainer.iteration == trainer.max_iter:
            if elapsed > 0:
                self._rate = (trainer.images_seen - self._seen0) / elapsed
            self._t0, self._seen0 = now, trainer.images_seen
            # losses, lr, grad_norm and every statistic the loss measured (num_pos, ...);
            # img_per_s is measured over the period instead of the last step
            scalars = {f"train/{k}": v for k, v in last.items() if k != "img_per_s"}
            scalars["train/img_per_s"] = self._rate
            self.logger.scalars(scalars, trainer.iteration)
        elif self._rate == 0.0 and elapsed > 0:
            self._rate = (trainer.images_seen - self._seen0) / elapsed
        self.logger.progress(
            trainer.iteration,
            {
                "cls": last.get("loss_cls", float("nan")),
                "box": last.get("loss_box_reg", float("nan")),
                "lr": last.get("lr", float("nan")),
                "img/s": self._rate,
            },
        )


class EvalHook(Hook):
    """COCO evaluation every ``period`` iterations (0 = only at the end) and after training.

    Logs ``val/AP``, ``val/AP50``, ... and ``vis_images`` validation images with their
    predicted boxes (``val/detections``); the last metrics stay in :attr:`metrics`. The final
    evaluation also writes ``coco_results.json`` into the run directory, and, with
    ``time_images > 0``, adds ``inference_ms_per_image``: the median time of one image at
    batch 1 over the first ``time_images`` validation images.

    Every evaluation appends ``{"iteration", "AP", "AP50", "AP75"}`` to
    ``metrics_history.json`` in the run directory (rank 0, atomically); a resumed run keeps
    the entries up to the iteration it resumes from.
    """

    HISTORY_FILE = "metrics_history.json"

    def __init__(
        self,
        *,
        period: int,
        val_loader: Any,
        val_set: Any,
        logger: RunLogger,
        run_dir: Path,
        vis_images: int = 4,
        vis_score_thresh: float = 0.3,
        time_images: int = 0,
        is_main: bool = True,
    ) -> None:
        self.period = period
        self.time_images, self.is_main = time_images, is_main
        self.history: list[dict[str, float]] = []
        self.val_loader, self.val_set = val_loader, val_set
        self.logger, self.run_dir = logger, Path(run_dir)
        self.vis_images, self.vis_score_thresh = vis_images, vis_score_thresh
        self.metrics: dict[str, Any] = {}
        self._done_at = -1

    def before_train(self, trainer: Trainer) -> None:
        """Keep the history of the evaluations up to the (resumed) start iteration."""
        self.history = [e for e in self._read_history() if e["iteration"] <= trainer.iteration]

    def _read_history(self) -> list[dict[str, float]]:
        import json

        try:
            data = json.loads((self.run_dir / self.HISTORY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        if not isinstance(data, list):
            return []
        return [e for e in data if isinstance(e, dict) and isinstance(e.get("iteration"), int)]

    def _record(self, iteration: int) -> None:
        from retina.utils.io import write_json_atomic

        entry: dict[str, float] = {"iteration": iteration}
        for key in ("AP", "AP50", "AP75"):
            value = self.metrics.get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                entry[key] = float(value)
        self.history = [e for e in self.history if e["iteration"] != iteration] + [entry]
        if self.is_main:
            write_json_atomic(self.run_dir / self.HISTORY_FILE, self.history, indent=1)

    def after_step(self, trainer: Trainer) -> None:
        if self.period > 0 and trainer.iteration % self.period == 0:
            self.evaluate(trainer, final=trainer.iteration == trainer.max_iter)

    def after_train(self, trainer: Trainer) -> None:
        if self._done_at != trainer.iteration or not self.metrics:
            self.evaluate(trainer, final=True)

    def evaluate(self, trainer: Trainer, final: bool) -> dict[str, Any]:
        from retina.engine.evaluation import evaluate_detections, run_inference

        model = unwrap(trainer.model)
        start = time.perf_counter()
        detections = run_inference(model, self.val_loader, trainer.device)
        out_dir = self.run_dir if final else None
        self.metrics = evaluate_detections(
            detections, self.val_set, out_dir=out_dir,
            evaluated=[d["image_id"] for d in detections],
        )  # fmt: skip
        self._done_at = trainer.iteration
        self._record(trainer.iteration)
        if final and self.time_images > 0:
            from retina.engine.evaluation import measure_inference_ms

            self.metrics["inference_ms_per_image"] = measure_inference_ms(
                model, self.val_set, trainer.device, self.time_images)
        self.logger.metrics(self.metrics, trainer.iteration)
        if self.logger.enabled and self.vis_images > 0:
            self.logger.images("val/detections", self._draw(model, trainer.device),
                               trainer.iteration)  # fmt: skip
        self.logger.flush()
        self.logger.write(
            f"iteration {trainer.iteration}: val AP {self.metrics.get('AP', float('nan')):.1f} "
            f"AP50 {self.metrics.get('AP50', float('nan')):.1f} "
            f"({time.perf_counter() - start:.0f} s)"
        )
        model.train()
        return self.metrics

    @torch.no_grad()
    def _draw(self, model: torch.nn.Module, device: torch.device) -> list[torch.Tensor]:
        was_training = model.training
        model.eval()
        drawn = []
        for index in range(min(self.vis_images, len(self.val_set))):
            item = self.val_set[index]
            if item is None:  # a broken image
                continue
            image = item[0]
            (det,) = model([image.to(device)])
            names = list(self.val_set.class_names)
            drawn.append(draw_detections_chw(image, det, names, self.vis_score_thresh))
        model.train(was_training)
        return drawn


class CheckpointHook(Hook):
    """Writes ``checkpoints/model_NNNNNNN.pt`` and ``last.pt`` every ``period`` iterations
    and at the end (rank 0 only), keeping the last ``keep``.

    The checkpoint is the trainer's state (model, optimizer, scheduler, scaler, iteration,
    RNG states, data position) plus ``extra`` (label mapping, resolved config).
    """

    def __init__(
        self,
        *,
        period: int,
        directory: Path,
        keep: int,
        extra: dict[str, Any],
        logger: RunLogger,
        enabled: bool = True,
    ) -> None:
        self.period, self.directory, self.keep = period, Path(directory), keep
        self.extra, self.logger, self.enabled = extra, logger, enabled
        self._done_at = -1

    def before_train(self, trainer: Trainer) -> None:
        # A resumed run starts from a checkpoint of this very iteration: writing it again at
        # the end (after evaluation has drawn from the RNG) would change its RNG state.
        self._done_at = trainer.iteration

    def after_step(self, trainer: Trainer) -> None:
        if self.period > 0 and trainer.iteration % self.period == 0:
            self.save(trainer)

    def after_train(self, trainer: Trainer) -> None:
        if self._done_at != trainer.iteration:
            self.save(trainer)

    def save(self, trainer: Trainer) -> None:
        self._done_at = trainer.iteration
        if not self.enabled:
            return
        from retina.engine.checkpoint import save_checkpoint

        state = {**trainer.state_dict(), **self.extra}
        path = save_checkpoint(state, self.directory, trainer.iteration, keep=self.keep)
        log.debug("wrote %s", path)

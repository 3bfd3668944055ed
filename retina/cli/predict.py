"""``retina-predict``: draw a checkpoint's detections on images (thin Hydra entry point).

    retina-predict checkpoint=PATH input=IMAGE_OR_FOLDER output=FOLDER [score_thresh=0.3]

Writes ``<output>/<image file name>.png`` (``a.jpg`` -> ``a.jpg.png``) with boxes, class names
and scores drawn, and ``<output>/detections.json`` with every kept detection in the original
image's pixels. Images are read by :func:`retina.data.images.read_image` (upright by their EXIF
orientation, any mode and depth as RGB uint8), as in training and evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from retina.cli import exit_on_interrupt

with exit_on_interrupt("retina-predict"):  # Ctrl-C while loading: one line
    import hydra
    import numpy as np
    import torch
    from omegaconf import DictConfig

    from retina.cli.common import exit_on_user_error, required_value, run_cli
    from retina.config import CONFIG_DIR
    from retina.data.images import IMAGE_SUFFIXES, read_image
    from retina.errors import ConfigError
    from retina.export.runtime import load_detector
    from retina.utils.device import select_device
    from retina.utils.io import save_image_atomic, write_json_atomic
    from retina.utils.vis import draw_detections

__all__ = ["list_images", "main", "predict", "read_image"]

log = logging.getLogger("retina.predict")


def list_images(source: Path) -> list[Path]:
    """``source`` itself, or the images directly inside the folder ``source`` (sorted)."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise ConfigError("input", f"{source}: no such file or folder")
    images = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        kinds = ", ".join(IMAGE_SUFFIXES)
        raise ConfigError("input", f"{source}: no images ({kinds}) in the folder")
    return images




def _transforms(cfg: DictConfig, state: dict) -> Any:
    """The checkpoint's val resize, with ``min_size``/``max_size`` overrides."""
    from retina.data import build_transforms

    data_cfg = (state["config"].get("data") or {}) if isinstance(state["config"], dict) else {}
    stored = data_cfg.get("val_transforms") or {}
    min_size = cfg.min_size if cfg.min_size is not None else stored.get("min_size")
    max_size = cfg.max_size if cfg.max_size is not None else stored.get("max_size")
    if min_size is None:
        return None  # the checkpoint had no resize: images go to the model as they are
    max_size = max_size if max_size is not None else round(int(min_size) * 1333 / 800)
    try:
        return build_transforms(train=False, min_size=int(min_size), max_size=int(max_size))
    except ValueError as err:
        raise ConfigError("min_size", str(err)) from None


def _batches(
    paths: Sequence[Path], transforms: Any, batch_size: int
) -> Iterator[tuple[list[torch.Tensor], list[dict[str, Any]]]]:
    """Batches in the evaluator's format; ``image_id`` is the index into ``paths``."""
    empty_boxes, empty_labels = np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
    for start in range(0, len(paths), batch_size):
        images, targets = [], []
        for index in range(start, min(start + batch_size, len(paths))):
            image = read_image(paths[index])
            orig = image.shape[:2]
            if transforms is not None:
                image = transforms(image, empty_boxes, empty_labels, empty_boxes)[0]
            images.append(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))))
            targets.append({"image_id": index, "orig_size": orig})
        yield images, targets


def _output_names(paths: Sequence[Path]) -> list[str]:
    """``<file name>.png`` for each input (``a.jpg`` -> ``a.jpg.png``).

    Injective: the inputs are one file or the files of one folder, so their names differ, and
    appending the same suffix keeps different names different (no stem or suffix is dropped).
    """
    return [f"{p.name}.png" for p in paths]


def predict(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Everything ``retina-predict`` does; returns the ``detections.json`` content."""
    from retina.engine.evaluation import run_inference

    checkpoint = required_value(cfg, "checkpoint")
    source = Path(required_value(cfg, "input"))
    output = Path(required_value(cfg, "output"))
    thresh = cfg.score_thresh
    if not isinstance(thresh, (int, float)) or isinstance(thresh, bool) or not 0 <= thresh <= 1:
        raise ConfigError("score_thresh", f"must be in [0, 1], got {thresh!r}")
    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise ConfigError("batch_size", f"must be a positive integer, got {cfg.batch_size!r}")
    device = select_device(str(cfg.device), "device")
    paths = list_images(source)
    if output.resolve() in {p.parent.resolve() for p in paths}:
        raise ConfigError("output", f"{output} is the input folder (its images would be lost)")
    model, state = load_detector(checkpoint, {"score_thresh": float(thresh)})
    class_names, cat_ids = list(state["class_names"]), list(state["cat_ids"])
    transforms = _transforms(cfg, state)

    detections = run_inference(
        model.to(device), _batches(paths, transforms, int(cfg.batch_size)), device
    )
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError("output", f"cannot create folder {output} ({err.strerror})") from None
    names = _output_names(paths)
    records = []
    for det in detections:
        path = paths[det["image_id"]]
        keep = det["scores"] >= thresh
        entries = [
            {
                "box": [round(v, 2) for v in box],
                "score": round(score, 4),
                "label": label,
                "class_name": class_names[label],
                "category_id": int(cat_ids[label]),
            }
            for box, score, label in zip(
                det["boxes"][keep].tolist(), det["scores"][keep].tolist(),
                det["labels"][keep].tolist(), strict=True,
            )
        ]
        image = read_image(path)
        save_image_atomic(draw_detections(image, entries), output / names[det["image_id"]])
        records.append({
            "file": str(path), "output": names[det["image_id"]],
            "height": int(image.shape[0]), "width": int(image.shape[1]), "detections": entries,
        })
        log.info("%s: %d detections", path.name, len(entries))
    result = {"checkpoint": checkpoint, "score_thresh": float(thresh), "images": records}
    write_json_atomic(output / "detections.json", result, indent=1)
    print(f"wrote {len(records)} images and detections.json to {output}")
    return result


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="predict")
def _app(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    with exit_on_user_error("retina-predict"):
        predict(cfg, Path(HydraConfig.get().runtime.output_dir))


def main() -> None:
    """Console entry point ``retina-predict``."""
    run_cli(_app, "retina-predict")


if __name__ == "__main__":
    main()

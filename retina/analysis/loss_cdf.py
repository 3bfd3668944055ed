"""The paper's Figure 4: how the focal loss spreads over positive and negative anchors.

The model of a checkpoint is run once over validation images; its classification logits and
the anchors' assignments (foreground class, background, ignored; the matcher of the model) are
then fixed, and for every γ the per-anchor focal loss (summed over the K sigmoid outputs of the
anchor, no α: α_t is constant within each set and cancels in the normalisation) is computed.
Separately for positive and negative anchors the losses are normalised to sum to one, sorted
ascending and drawn as a cumulative distribution against the fraction of anchors. With γ = 0
the loss is spread fairly evenly; with γ = 2 nearly all of the negatives' loss comes from a
small fraction of hard negatives, while the positives' distribution changes little.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from retina.utils.io import save_figure_atomic

__all__ = [
    "FIGURE4_GAMMAS",
    "anchor_logits_and_labels",
    "loss_cdf_from_checkpoint",
    "normalized_loss_cdf",
    "per_anchor_losses",
    "plot_loss_cdf",
]

FIGURE4_GAMMAS: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
"""The γ values of the paper's Figure 4."""

Curves = dict[float, tuple[np.ndarray, np.ndarray]]


@torch.no_grad()
def anchor_logits_and_labels(
    model: nn.Module, images: Sequence[Tensor], targets: Sequence[dict[str, Tensor]]
) -> tuple[Tensor, Tensor]:
    """Classification logits of every anchor and its training assignment.

    The assignment is :meth:`RetinaNet.assign <retina.modeling.retinanet.RetinaNet.assign>`,
    the one the training loss uses: crowd boxes take part in matching but never become
    foreground.

    Args:
        model: a :class:`~retina.modeling.retinanet.RetinaNet` (eval mode).
        images: B images ``(3, H_i, W_i)``, uint8 or float in [0, 1].
        targets: B target dicts with ``boxes`` ``(M, 4)``, ``labels`` ``(M,)`` and optionally
            ``crowd_boxes`` ``(C, 4)``.

    Returns:
        ``logits`` ``(B*R, K)`` float32 and ``labels`` ``(B*R,)`` int64 (class >= 0,
        -1 background, -2 ignored), R anchors per image.
    """
    x, _ = model.preprocess(list(images))
    logits, _ = model.head(model.fpn(model.backbone(x)))  # (B, R, K)
    labels = model.assign(list(images), list(targets)).labels  # (B, R)
    return logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1)


def per_anchor_losses(
    logits: Tensor, labels: Tensor, gammas: Sequence[float]
) -> dict[float, tuple[Tensor, Tensor]]:
    """Per-anchor focal loss, split into positive and negative anchors, for each γ.

    Args:
        logits: ``(N, K)``; labels: ``(N,)`` (class >= 0, -1 background, -2 ignored).

    Returns:
        ``{γ: (positive (P,), negative (Q,))}``, each anchor's loss summed over its K outputs
        (computed with :func:`retina.ops.sigmoid_focal_loss_from_labels`, ``alpha=None``).
    """
    from retina.ops import sigmoid_focal_loss_from_labels

    pos, neg = labels >= 0, labels == -1
    out = {}
    for gamma in gammas:
        loss = sigmoid_focal_loss_from_labels(
            logits, labels, alpha=None, gamma=float(gamma), reduction="none"
        ).sum(dim=1)
        out[float(gamma)] = (loss[pos], loss[neg])
    return out


def normalized_loss_cdf(
    losses: Tensor | np.ndarray, points: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative share of the total loss against the fraction of samples, lowest loss first.

    Args:
        losses: ``(N,)`` non-negative losses, N >= 1.
        points: at most this many (evenly spaced) points are returned, always including the
            last one, whose cumulative value is 1.

    Returns:
        ``fraction`` and ``cdf``, both ``(min(N, points),)`` in (0, 1].
    """
    values = np.sort(np.asarray(losses, dtype=np.float64).reshape(-1))
    if values.size == 0:
        raise ValueError("normalized_loss_cdf: no samples")
    total = values.sum()
    cdf = np.cumsum(values) / total if total > 0 else np.arange(1, values.size + 1) / values.size
    fraction = np.arange(1, values.size + 1) / values.size
    index = np.unique(np.linspace(0, values.size - 1, min(points, values.size)).round().astype(int))
    return fraction[index], cdf[index]


def plot_loss_cdf(
    positive: Curves, negative: Curves, out: Path, counts: tuple[int, int] = (0, 0), note: str = ""
) -> Path:
    """Draw the two panels of Figure 4 (positive and negative anchors) to ``out``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 4.2))
    FigureCanvasAgg(fig)
    panels = (("positive", "foreground", positive, counts[0]),
              ("negative", "background", negative, counts[1]))
    for k, (kind, region, curves, count) in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1)
        for gamma, (fraction, cdf) in curves.items():
            ax.plot(fraction, cdf, label=f"γ = {gamma:g}", linewidth=2)
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel(f"fraction of {region} examples")
        ax.set_ylabel("cumulative normalized loss")
        ax.set_title(f"CDF of loss, {kind} samples ({count:,} anchors)", fontsize=10)
        ax.legend(loc="upper left")
        ax.grid(alpha=0.3)
    if note:
        fig.suptitle(note, fontsize=9)
    fig.tight_layout()
    return save_figure_atomic(fig, out)


def _val_dataset(
    config: dict[str, Any], data: str | None, overrides: Sequence[str], checkpoint: Path
) -> Any:
    """The validation set: the checkpoint's ``data`` config, or the ``data=GROUP`` config of
    this project's configs, with ``data.KEY=VALUE`` overrides."""
    from omegaconf import OmegaConf

    from retina.engine.build import prepare_data_root
    from retina.engine.distributed import DistInfo
    from retina.engine.inference import build_val_dataset
    from retina.utils.instantiate import check_targets

    where = "data" if data is not None else f"{checkpoint}: config.data"
    if data is not None:
        node = _compose_data(data, overrides)
    else:
        if not isinstance(config.get("data"), dict):
            raise ValueError("the checkpoint has no data config; pass data=GROUP (e.g. shapes)")
        check_targets(config["data"], where, "data")
        node = OmegaConf.create(config["data"])
        if overrides:
            node = OmegaConf.merge(node, OmegaConf.from_dotlist(
                [o.removeprefix("data.") for o in overrides]))
    for key in ("root", "val_ann", "val_images"):
        if OmegaConf.select(node, key) is None:
            raise ValueError(f"data.{key} is not set")
    return build_val_dataset(node, prepare_data_root(node, DistInfo()), where)


def _compose_data(group: str, overrides: Sequence[str]) -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from retina.config import CONFIG_DIR
    from retina.engine.defaults import register_defaults
    from retina.errors import first_line

    if not (CONFIG_DIR / "data" / f"{group}.yaml").is_file():
        raise ValueError(f"data={group}: no such config ({CONFIG_DIR / 'data'})")
    register_defaults()
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[f"data={group}", *overrides])
    except HydraException as err:
        raise ValueError(f"data overrides: {first_line(err)}") from None
    return cfg.data


def loss_cdf_from_checkpoint(
    checkpoint: Path,
    out: Path,
    *,
    data: str | None = None,
    data_overrides: Sequence[str] = (),
    max_images: int = 50,
    gammas: Sequence[float] = FIGURE4_GAMMAS,
    device: str = "cpu",
    batch_size: int = 4,
) -> Path:
    """Figure 4 for a trained model: run it on ``max_images`` validation images and plot.

    Raises:
        CheckpointError / DataError / ValueError: with a one-line message naming the
            checkpoint, the data config key or the dataset file at fault.
    """
    from retina.data import collate_detection
    from retina.engine.inference import check_label_mapping, load_for_inference
    from retina.utils.device import select_device

    torch_device = select_device(device, "device")
    model, state = load_for_inference(str(checkpoint))
    model.to(torch_device)
    dataset = _val_dataset(state.get("config") or {}, data, data_overrides, checkpoint)
    check_label_mapping(state, dataset, str(checkpoint))
    count = min(max_images, len(dataset))
    losses: dict[float, tuple[list[Tensor], list[Tensor]]] = {float(g): ([], []) for g in gammas}
    for start in range(0, count, batch_size):
        batch = [dataset[i] for i in range(start, min(start + batch_size, count))]
        images, targets = collate_detection([b for b in batch if b is not None])
        if not images:
            continue
        images = [im.to(torch_device) for im in images]
        logits, labels = anchor_logits_and_labels(model, images, targets)
        for gamma, (pos, neg) in per_anchor_losses(logits, labels, gammas).items():
            losses[gamma][0].append(pos.cpu())
            losses[gamma][1].append(neg.cpu())
    positive, negative = {}, {}
    num_pos = num_neg = 0
    for gamma, (pos, neg) in losses.items():
        pos_t, neg_t = torch.cat(pos) if pos else torch.empty(0), torch.cat(neg) if neg else None
        if neg_t is None or neg_t.numel() == 0:
            raise ValueError(f"{checkpoint}: no background anchors in {count} images")
        if pos_t.numel() == 0:
            raise ValueError(f"{checkpoint}: the {count} validation images have no positive "
                             "anchor; use more images (images=N)")
        positive[gamma], negative[gamma] = normalized_loss_cdf(pos_t), normalized_loss_cdf(neg_t)
        num_pos, num_neg = pos_t.numel(), neg_t.numel()
    note = f"{checkpoint.name} (iteration {state.get('iteration')}), {count} validation images"
    return plot_loss_cdf(positive, negative, out, (num_pos, num_neg), note)

"""Classification-loss modules (focal family, OHEM) and the per-anchor box losses.

Classification losses are callables with the call signature shared by the whole family::

    loss(logits (N, K), labels (N,), num_images, *, anchors=None, per_image=False)

``labels``: class ``>= 0`` foreground, ``-1`` background, ``-2`` ignored; rows are the
anchors of ``num_images`` images laid out image-major (``N = num_images * A``). The result is
the *summed* loss (a scalar), or with ``per_image=True`` the per-image sums ``(num_images,)``
(the meta-architecture needs those for torchvision's per-image normalisation). ``anchors``
``(A, 4)`` is only used by :class:`OHEMLoss` (NMS over anchor boxes); the meta-architecture
always passes it. Normalising by the number of foreground anchors is the caller's job.

:class:`FocalLoss` and :class:`OHEMLoss` take ``backend`` (``loss.backend`` in the configs):
which kernels run their sigmoid focal loss, ``"auto"`` | ``"triton"`` | ``"eager"`` (see
:mod:`retina.ops.focal_backend`), kept as ``.backend`` and passed to every call (forward and
backward); nothing else decides it. :class:`FocalLossStar` always runs the eager kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from retina.modeling.box_coder import BoxCoder
from retina.ops.boxes import generalized_iou_loss, offset_batched_nms
from retina.ops.focal import focal_loss_star, sigmoid_focal_loss_from_labels
from retina.ops.focal_backend import check_backend
from retina.utils.checks import check_int, check_number

__all__ = ["FocalLoss", "FocalLossStar", "OHEMLoss", "box_regression_loss", "BOX_LOSSES"]

BOX_LOSSES = ("smooth_l1", "l1", "giou")


def _sum(loss: Tensor, num_images: int, per_image: bool) -> Tensor:
    """``(N, K)`` or ``(N,)`` elementwise loss -> scalar sum or ``(num_images,)`` sums."""
    if per_image:
        return loss.reshape(num_images, -1).sum(dim=1)
    return loss.sum()


class FocalLoss:
    """Sigmoid focal loss FL = -alpha_t (1 - p_t)^gamma log(p_t), summed over all classes of
    all non-ignored anchors.

    ``gamma=0, alpha=None`` is plain CE; ``gamma=0, alpha=a`` is alpha-balanced CE (Table 1a);
    the paper's default is ``gamma=2, alpha=0.25``.
    """

    def __init__(
        self, gamma: float = 2.0, alpha: float | None = 0.25, backend: str = "auto"
    ) -> None:
        self.gamma = check_number("gamma", gamma, 0.0)
        self.alpha = check_number("alpha", alpha, 0.0, 1.0, optional=True)
        self.backend = check_backend(backend)

    def __call__(self, logits: Tensor, labels: Tensor, num_images: int, *,
                 anchors: Tensor | None = None, per_image: bool = False) -> Tensor:
        if not per_image:
            return sigmoid_focal_loss_from_labels(
                logits, labels, self.alpha, self.gamma, "sum", backend=self.backend
            )
        # One fused "sum" per image (views, no copies): materialising the (N, K) "none"
        # loss and its gradient costs more than the extra kernel calls.
        return torch.stack(
            [
                sigmoid_focal_loss_from_labels(x, y, self.alpha, self.gamma, backend=self.backend)
                for x, y in zip(
                    logits.chunk(num_images), labels.chunk(num_images), strict=True
                )
            ]
        )

    def __repr__(self) -> str:
        return f"FocalLoss(gamma={self.gamma}, alpha={self.alpha}, backend={self.backend!r})"


class FocalLossStar:
    """FL* = -log(sigmoid(gamma x_t + beta)) / gamma (the paper's appendix A).

    The paper's reported setting is ``gamma=4, beta=0`` (about as good as FL).
    """

    def __init__(self, gamma: float = 4.0, beta: float = 0.0) -> None:
        self.gamma = check_number("gamma", gamma, 0.0, low_open=True)  # FL* divides by it
        self.beta = check_number("beta", beta)

    def __call__(self, logits: Tensor, labels: Tensor, num_images: int, *,
                 anchors: Tensor | None = None, per_image: bool = False) -> Tensor:
        valid = labels >= -1
        targets = F.one_hot(labels.clamp(min=-1) + 1, logits.shape[1] + 1)[:, 1:]
        loss = focal_loss_star(
            logits, targets.to(logits.dtype), gamma=self.gamma, beta=self.beta, reduction="none"
        )
        loss = loss * valid[:, None].to(loss.dtype)
        return _sum(loss, num_images, per_image)

    def __repr__(self) -> str:
        return f"FocalLossStar(gamma={self.gamma}, beta={self.beta})"


class OHEMLoss:
    """Online hard example mining (the paper's Table 1d baseline) with sigmoid CE.

    Per image: every non-ignored anchor is scored by its CE loss (summed over classes,
    optionally alpha-balanced), NMS at ``nms_thresh`` runs over the anchor boxes ranked by
    loss, and the ``batch_size_per_image`` highest-loss survivors are kept. With
    ``positive_fraction`` (0.25 = the paper's 1:3) at most that share are foreground and
    background fills the rest; ``None`` keeps the top anchors whatever their label.

    Only the ``pre_nms_per_image`` highest-loss anchors (default ``8 * batch_size_per_image``)
    enter NMS: greedy NMS only needs the prefix of the ranking that yields the kept set, and
    NMS over ~100k anchors per image would cost more than the network. Batched over images
    in one NMS call (images never suppress each other). ``anchors`` ``(A, 4)`` is required.
    """

    def __init__(
        self,
        batch_size_per_image: int = 256,
        positive_fraction: float | None = 0.25,
        nms_thresh: float = 0.7,
        alpha: float | None = None,
        pre_nms_per_image: int | None = None,
        backend: str = "auto",
    ) -> None:
        self.batch_size_per_image = check_int("batch_size_per_image", batch_size_per_image)
        self.positive_fraction = check_number(
            "positive_fraction", positive_fraction, 0.0, 1.0, low_open=True, optional=True
        )
        self.nms_thresh = check_number("nms_thresh", nms_thresh, 0.0, 1.0, low_open=True)
        self.alpha = check_number("alpha", alpha, 0.0, 1.0, optional=True)
        self.pre_nms_per_image = check_int(
            "pre_nms_per_image", pre_nms_per_image or 8 * self.batch_size_per_image
        )
        self.backend = check_backend(backend)

    @torch.no_grad()
    def select(self, loss: Tensor, labels: Tensor, anchors: Tensor) -> Tensor:
        """Hard-example mask ``(B, A)`` from per-anchor ``loss`` and ``labels`` ``(B, A)``."""
        b, a = loss.shape
        score = loss.float().masked_fill(labels < -1, float("-inf"))
        top, idx = score.topk(min(a, self.pre_nms_per_image), dim=1)  # (B, P), sorted
        finite = torch.isfinite(top)
        img = torch.arange(b, device=loss.device)[:, None].expand_as(idx)
        cand = finite.flatten().nonzero().squeeze(1)
        keep = offset_batched_nms(
            anchors[idx.flatten()[cand]], top.flatten()[cand], img.flatten()[cand], self.nms_thresh
        )
        kept = torch.zeros(idx.numel(), dtype=torch.bool, device=loss.device)
        kept[cand[keep]] = True
        kept = kept.view_as(idx)  # rows stay in decreasing-loss order
        bs = self.batch_size_per_image
        if self.positive_fraction is None:
            chosen = kept & (kept.cumsum(dim=1) <= bs)
        else:
            is_pos = labels.gather(1, idx) >= 0
            kpos, kneg = kept & is_pos, kept & ~is_pos
            pos = kpos & (kpos.cumsum(dim=1) <= int(bs * self.positive_fraction))
            room = bs - pos.sum(dim=1, keepdim=True)
            chosen = pos | (kneg & (kneg.cumsum(dim=1) <= room))
        mask = torch.zeros_like(labels, dtype=torch.bool)
        return mask.scatter_(1, idx, chosen)

    def __call__(self, logits: Tensor, labels: Tensor, num_images: int, *,
                 anchors: Tensor | None = None, per_image: bool = False) -> Tensor:
        if anchors is None:
            raise ValueError("OHEMLoss needs anchors=(A, 4) to run NMS over anchor boxes")
        ce = sigmoid_focal_loss_from_labels(
            logits, labels, alpha=self.alpha, gamma=0.0, reduction="none", backend=self.backend
        ).sum(dim=1)
        ce = ce.view(num_images, -1)
        mask = self.select(ce.detach(), labels.view(num_images, -1), anchors)
        return _sum(ce * mask.to(ce.dtype), num_images, per_image)

    def __repr__(self) -> str:
        return (
            f"OHEMLoss(batch_size_per_image={self.batch_size_per_image}, "
            f"positive_fraction={self.positive_fraction}, nms_thresh={self.nms_thresh}, "
            f"backend={self.backend!r})"
        )


def box_regression_loss(
    kind: str,
    deltas: Tensor,
    anchors: Tensor,
    gt_boxes: Tensor,
    box_coder: BoxCoder,
    beta: float = 0.1,
) -> Tensor:
    """Per-anchor box loss ``(P,)`` for foreground anchors.

    Args:
        kind: ``"smooth_l1"`` (the paper; ``beta`` 0.1 as detectron2's RetinaNet), ``"l1"``
            (torchvision v1 and later detectron2) or ``"giou"`` (torchvision v2, on decoded
            boxes). deltas, anchors, gt_boxes: ``(P, 4)``.
    """
    if kind == "giou":
        return generalized_iou_loss(box_coder.decode(deltas, anchors), gt_boxes.float())
    target = box_coder.encode(gt_boxes, anchors)
    deltas = deltas.float()
    if kind == "l1" or (kind == "smooth_l1" and beta == 0):
        return F.l1_loss(deltas, target, reduction="none").sum(dim=1)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(deltas, target, reduction="none", beta=beta).sum(dim=1)
    raise ValueError(f"box_loss={kind!r}: expected one of {BOX_LOSSES}")

"""RetinaNet meta-architecture: preprocessing, forward, batched loss and batched inference."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from retina.modeling.anchors import AnchorGenerator
from retina.modeling.assign import Assignment, assign_anchors
from retina.modeling.box_coder import BoxCoder
from retina.modeling.losses import BOX_LOSSES, box_regression_loss
from retina.modeling.matcher import Matcher
from retina.ops.boxes import clip_boxes, offset_batched_nms
from retina.utils.checks import check_int, check_number
from retina.utils.distributed import all_reduce_sum, world_size

__all__ = ["RetinaNet", "LossOutput", "NORMALIZERS", "IMAGENET_MEAN", "IMAGENET_STD"]

NORMALIZERS = ("batch", "image", "ema")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Images = Tensor | Sequence[Tensor]


class LossOutput(NamedTuple):
    """What a training forward returns: the ``losses`` to sum and backpropagate, and the
    ``stats`` the loss measured (detached scalars for the log, never part of the loss)."""

    losses: dict[str, Tensor]
    stats: dict[str, Tensor]


class RetinaNet(nn.Module):
    """One-stage detector: backbone -> FPN -> shared heads over anchors.

    All parts are built outside and passed in (see :func:`retina.modeling.build_retinanet`).

    Args:
        backbone: images ``(B, 3, H, W)`` -> ``[C3, C4, C5]``.
        fpn: ``[C3, C4, C5]`` -> ``[P3..P7]``.
        head: ``[P3..P7]`` -> ``(logits (B, R, K), deltas (B, R, 4))``, R = all anchors.
        anchor_generator, matcher, box_coder: see their modules.
        num_classes: K (no background class).
        cls_loss: a classification-loss callable (see :mod:`retina.modeling.losses`).
        box_loss: ``"smooth_l1"`` | ``"l1"`` | ``"giou"``; smooth_l1_beta: its beta.
        loss_normalizer: number of foreground anchors (min 1) counted over the ``"batch"``
            (the paper), per ``"image"`` then averaged (torchvision), or an ``"ema"`` of the
            batch count with ``normalizer_momentum`` 0.9 starting at 100 (detectron2).
            Under ``torch.distributed`` the batch count is summed over all processes inside
            :meth:`losses` (detectron2 uses each process's local count), so N processes
            compute the gradient of one process with the whole global batch; no caller
            renormalises.
        score_thresh, topk_candidates: per level, keep scores > 0.05 and the best 1000.
        nms_thresh: class-wise NMS IoU (0.5). detections_per_img: 100 (the paper, COCO's
            maxDets and detectron2; torchvision uses 300).
        pixel_mean, pixel_std: in [0, 1] units, stored as buffers so checkpoints carry them.
        size_divisibility: pad the batch to a multiple of this (128 = P7's stride, so every
            level's stride is exact).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        fpn: nn.Module,
        head: nn.Module,
        anchor_generator: AnchorGenerator,
        matcher: Matcher,
        box_coder: BoxCoder,
        num_classes: int,
        cls_loss: Callable[..., Tensor],
        box_loss: str = "smooth_l1",
        smooth_l1_beta: float = 0.1,
        loss_normalizer: str = "batch",
        normalizer_momentum: float = 0.9,
        score_thresh: float = 0.05,
        topk_candidates: int = 1000,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
        size_divisibility: int = 128,
    ) -> None:
        super().__init__()
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"box_loss={box_loss!r}: expected one of {BOX_LOSSES}")
        if loss_normalizer not in NORMALIZERS:
            raise ValueError(f"loss_normalizer={loss_normalizer!r}: expected one of {NORMALIZERS}")
        check_number("score_thresh", score_thresh, 0.0, 1.0)
        check_number("nms_thresh", nms_thresh, 0.0, 1.0, low_open=True)
        check_int("topk_candidates", topk_candidates)
        check_int("detections_per_img", detections_per_img)
        check_number("normalizer_momentum", normalizer_momentum, 0.0, 1.0)
        check_number("smooth_l1_beta", smooth_l1_beta, 0.0)
        self.backbone = backbone
        self.fpn = fpn
        self.head = head
        self.anchor_generator = anchor_generator
        self.matcher = matcher
        self.box_coder = box_coder
        self.num_classes = num_classes
        self.cls_loss = cls_loss
        self.box_loss = box_loss
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_normalizer = loss_normalizer
        self.normalizer_momentum = normalizer_momentum
        self.score_thresh = score_thresh
        self.topk_candidates = topk_candidates
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.size_divisibility = size_divisibility
        mean = torch.tensor([float(v) for v in pixel_mean]).view(3, 1, 1)
        std = torch.tensor([float(v) for v in pixel_std]).view(3, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=True)
        self.register_buffer("pixel_std", std, persistent=True)
        self.register_buffer("normalizer_ema", torch.tensor(100.0), persistent=True)

    # ------------------------------------------------------------------ preprocessing
    def preprocess(self, images: Images) -> tuple[Tensor, Tensor]:
        """Normalise and zero-pad to a multiple of ``size_divisibility``.

        Returns:
            batch ``(B, 3, H_pad, W_pad)`` and sizes ``(B, 2)`` int64 ``(h, w)`` before padding.
        """
        if isinstance(images, Tensor):
            if images.dim() == 3:
                images = images.unsqueeze(0)
            if images.dim() != 4 or images.shape[1] != 3:
                raise ValueError(f"images: expected (B, 3, H, W), got {tuple(images.shape)}")
            x = self._normalize(images)
            sizes = torch.tensor([list(x.shape[-2:])] * x.shape[0], device=x.device)
            d = self.size_divisibility
            ph, pw = (-x.shape[-2]) % d, (-x.shape[-1]) % d
            return (F.pad(x, (0, pw, 0, ph)) if ph or pw else x), sizes
        if len(images) == 0:
            raise ValueError("images: empty batch")
        for i, im in enumerate(images):
            if not isinstance(im, Tensor) or im.dim() != 3 or im.shape[0] != 3:
                shape = tuple(im.shape) if isinstance(im, Tensor) else type(im).__name__
                raise ValueError(f"images[{i}]: expected a (3, H, W) tensor, got {shape}")
        hs = [int(im.shape[1]) for im in images]
        ws = [int(im.shape[2]) for im in images]
        d = self.size_divisibility
        hp, wp = -(-max(hs) // d) * d, -(-max(ws) // d) * d
        batch = self.pixel_mean.new_zeros((len(images), 3, hp, wp))
        for i, im in enumerate(images):  # padding stays 0 after normalisation, as torchvision
            batch[i, :, : hs[i], : ws[i]] = self._normalize(im.to(batch.device))
        sizes = torch.tensor(list(zip(hs, ws, strict=True)), device=batch.device)
        return batch, sizes

    def _to_unit(self, images: Tensor) -> Tensor:
        if images.dtype == torch.uint8:
            return images.to(self.pixel_mean.dtype) / 255.0
        if not images.is_floating_point():
            raise ValueError(f"images: expected float in [0, 1] or uint8, got {images.dtype}")
        return images.to(self.pixel_mean.dtype)

    def _normalize(self, images: Tensor) -> Tensor:
        return (self._to_unit(images) - self.pixel_mean) / self.pixel_std

    # ------------------------------------------------------------------ forward
    def forward(
        self, images: Images, targets: list[dict[str, Tensor]] | None = None
    ) -> LossOutput | list[dict[str, Tensor]]:
        """Train mode: ``model(images, targets) -> LossOutput(losses, stats)`` (see
        :meth:`losses`). Eval mode: ``model(images) -> [{"boxes" (D,4), "scores" (D,),
        "labels" (D,)}]``."""
        if self.training and targets is None:
            raise ValueError("RetinaNet in train mode needs targets; call model.eval() to detect")
        x, sizes = self.preprocess(images)
        feats = self.fpn(self.backbone(x))
        logits, deltas = self.head(feats)
        grids = [tuple(f.shape[-2:]) for f in feats]
        anchors = self.anchor_generator(grids, x.device)
        counts = self.anchor_generator.num_anchors_per_level(grids)
        if self.training:
            return self.losses(logits, deltas, anchors, targets, counts)
        return self.inference(logits, deltas, anchors, counts, sizes)

    # ------------------------------------------------------------------ loss
    @torch.no_grad()
    def assign(self, images: Images, targets: list[dict[str, Tensor]]) -> Assignment:
        """The training assignment of every anchor of ``images`` (no forward pass).

        The anchors are those of the padded batch (:meth:`preprocess`), with feature-map
        sizes ``ceil(H_pad / stride)`` as the backbone and FPN produce them, matched by
        :func:`~retina.modeling.assign.assign_anchors` exactly as :meth:`losses` matches.

        Returns:
            :class:`~retina.modeling.assign.Assignment` with ``labels``/``matches`` ``(B, R)``
            and ``matched_boxes`` ``(B, R, 4)``.
        """
        x, _ = self.preprocess(images)
        h, w = x.shape[-2:]
        grids = [(-(-h // s), -(-w // s)) for s in self.anchor_generator.strides]
        anchors = self.anchor_generator(grids, x.device)
        return assign_anchors(anchors, targets, self.matcher, self.num_classes)

    def losses(
        self,
        logits: Tensor,
        deltas: Tensor,
        anchors: Tensor,
        targets: list[dict[str, Tensor]],
        anchors_per_level: Sequence[int],
    ) -> LossOutput:
        """Batched assignment and loss, and what the loss measured on the way.

        Args:
            logits ``(B, R, K)``, deltas ``(B, R, 4)``, anchors ``(R, 4)``; targets per image;
            anchors_per_level: R split by level (P3 first).

        Returns:
            :class:`LossOutput`: ``losses`` ``{"loss_cls", "loss_box_reg"}`` and ``stats``
            (0-dim float64 tensors, summed over processes): ``num_pos`` (foreground anchors
            of the batch), ``normalizer`` (the divisor: ``max(num_pos, 1)``, the EMA, or
            the mean per-image ``max(n_i, 1)``) and ``num_pos_p3`` .. ``num_pos_p7``.
        """
        b, r, k = logits.shape
        if len(targets) != b:
            raise ValueError(f"got {b} images but {len(targets)} targets")
        a = assign_anchors(anchors, targets, self.matcher, self.num_classes)
        fg = a.foreground
        fg_img, fg_anchor = fg.nonzero(as_tuple=True)
        pos_per_image = fg.sum(dim=1)
        per_level = torch.stack([n.sum() for n in fg.sum(dim=0).split(list(anchors_per_level))])
        # one sum over processes: per-level counts, the per-image divisors and the image count
        measured = all_reduce_sum(torch.cat([
            per_level, pos_per_image.clamp(min=1).sum()[None], pos_per_image.new_tensor([b]),
        ]).double())  # fmt: skip
        total = measured[:-2].sum()
        per_image = self.loss_normalizer == "image"
        loss_cls = self.cls_loss(
            logits.reshape(b * r, k), a.labels.reshape(-1), b, anchors=anchors,
            per_image=per_image,
        )
        box = box_regression_loss(
            self.box_loss,
            deltas[fg_img, fg_anchor],
            anchors[fg_anchor],
            a.matched_boxes[fg_img, fg_anchor],
            self.box_coder,
            self.smooth_l1_beta,
        )
        if per_image:  # per-image means: DDP's average over equal per-rank batches is exact
            norm = pos_per_image.clamp(min=1).to(box.dtype)
            box_img = box.new_zeros(b).index_add_(0, fg_img, box)
            losses = {"loss_cls": (loss_cls / norm).mean(), "loss_box_reg": (box_img / norm).mean()}
            normalizer = measured[-2] / measured[-1]
        else:
            normalizer, denom = self._normalizer(total)
            losses = {"loss_cls": loss_cls / denom, "loss_box_reg": box.sum() / denom}
        levels = {f"num_pos_p{s.bit_length() - 1}": n
                  for s, n in zip(self.anchor_generator.strides, measured[:-2], strict=True)}
        return LossOutput(losses, {"num_pos": total, "normalizer": normalizer.double(), **levels})

    def _normalizer(self, total: Tensor) -> tuple[Tensor, Tensor]:
        """(global normaliser, this process's float32 divisor) for the batch/EMA normalisers.

        ``total`` is the foreground count summed over processes; each divides by
        ``max(total, 1) / world``, so DDP's gradient *average* equals the gradient of the
        summed loss over ``max(total, 1)`` (the EMA tracks the global count the same way).
        """
        world = world_size()
        if self.loss_normalizer == "ema":
            if self.training:
                m = self.normalizer_momentum
                self.normalizer_ema.mul_(m).add_((1 - m) * total.clamp(min=1))
            ema = self.normalizer_ema.clone()
            return ema, ema / world
        norm = total.clamp(min=1)
        return norm, (norm / world).float()

    # ------------------------------------------------------------------ inference
    def _level_topk(self, logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Top ``topk_candidates`` (anchor, class) pairs of one level by logit.

        ``logits``: ``(B, n, K)`` -> logits, anchor indices, labels, each ``(B, k)``, sorted.
        The k best pairs can only come from the k anchors with the best per-anchor maximum
        (any other anchor is beaten by k pairs), so top-k runs over ``k*K`` pairs instead of
        ``n*K`` (P3 at 800x1333: 150k x 91); with ``n <= k`` those anchors are all of them.
        Ranking by logit equals ranking by score; the score threshold is applied afterwards,
        which keeps the same set as torchvision's threshold-then-top-k (up to ties).
        """
        b, n, k = logits.shape
        # sym_min, not a branch on n: the same code traces with symbolic sizes (retina.export)
        kk = torch.sym_min(self.topk_candidates, n)
        best_anchors = logits.amax(dim=2).topk(kk, dim=1).indices  # (B, kk)
        sub = logits.gather(1, best_anchors[..., None].expand(-1, -1, k))  # (B, kk, K)
        top, flat = sub.reshape(b, kk * k).topk(torch.sym_min(self.topk_candidates, kk * k), 1)
        return top, best_anchors.gather(1, flat // k), flat % k

    def candidates(self, logits: Tensor, deltas: Tensor, anchors: Tensor,
                   anchors_per_level: list[int], sizes: Tensor
                   ) -> tuple[Tensor, Tensor, Tensor]:
        """Per-level top-k (anchor, class) pairs, decoded and clipped, before threshold and NMS.

        Shared by :meth:`inference` and the exported graph (:mod:`retina.export`).

        Args:
            logits ``(B, R, K)``, deltas ``(B, R, 4)``, anchors ``(R, 4)``,
            anchors_per_level: R split by level, sizes ``(B, 2)`` image ``(h, w)``.

        Returns:
            scores ``(B, C)`` float32, labels ``(B, C)`` int64 (0..K-1), boxes ``(B, C, 4)``,
            C = the candidates of all levels.
        """
        scores, anchor_idx, labels = [], [], []
        start = 0
        for n in anchors_per_level:  # 5 levels, each batched over images
            top, a_idx, lab = self._level_topk(logits[:, start : start + n])
            scores.append(top.float().sigmoid())
            anchor_idx.append(a_idx + start)
            labels.append(lab)
            start += n
        scores_t = torch.cat(scores, dim=1)  # (B, C)
        anchor_t = torch.cat(anchor_idx, dim=1)
        labels_t = torch.cat(labels, dim=1)
        boxes = self.box_coder.decode(
            deltas.gather(1, anchor_t[..., None].expand(-1, -1, 4)), anchors[anchor_t]
        )
        return scores_t, labels_t, clip_boxes(boxes, sizes)  # (B, C, 4)

    @torch.no_grad()
    def inference(self, logits: Tensor, deltas: Tensor, anchors: Tensor,
                  anchors_per_level: list[int], sizes: Tensor) -> list[dict[str, Tensor]]:
        """Batched postprocessing: per-level threshold + top-k, decode, clip, one NMS call for
        all images and classes, best ``detections_per_img`` per image.

        Args:
            logits ``(B, R, K)``, deltas ``(B, R, 4)``, anchors ``(R, 4)``,
            anchors_per_level: R split by level, sizes ``(B, 2)`` image ``(h, w)``.
        """
        b, _, k = logits.shape
        scores_t, labels_t, boxes = self.candidates(
            logits, deltas, anchors, anchors_per_level, sizes
        )
        img = torch.arange(b, device=boxes.device)[:, None].expand_as(labels_t)
        cand = (scores_t > self.score_thresh).flatten().nonzero().squeeze(1)
        groups = (img * k + labels_t).flatten()[cand]
        keep = cand[
            offset_batched_nms(
                boxes.reshape(-1, 4)[cand], scores_t.flatten()[cand], groups, self.nms_thresh
            )
        ]  # decreasing score over the whole batch
        keep_img = img.flatten()[keep]
        order = torch.sort(keep_img, stable=True).indices
        keep, keep_img = keep[order], keep_img[order]
        counts = torch.bincount(keep_img, minlength=b)
        first = counts.cumsum(0) - counts
        rank = torch.arange(keep.numel(), device=keep.device) - first[keep_img]
        keep = keep[rank < self.detections_per_img]
        counts = counts.clamp(max=self.detections_per_img).tolist()
        out_boxes = boxes.reshape(-1, 4)[keep].split(counts)
        out_scores = scores_t.flatten()[keep].split(counts)
        out_labels = labels_t.flatten()[keep].split(counts)
        return [
            {"boxes": bx, "scores": sc, "labels": lb}
            for bx, sc, lb in zip(out_boxes, out_scores, out_labels, strict=True)
        ]

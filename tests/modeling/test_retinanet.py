"""RetinaNet meta-architecture: preprocessing, loss edge cases, prior-init loss, inference
format, training on one batch."""

import math

import pytest
import torch

from retina.modeling import FocalLoss, OHEMLoss, build_retinanet


def tiny(**kw):
    torch.manual_seed(0)
    args = dict(num_classes=3, depth=10, norm="gn", freeze_at=0, fpn_channels=16, num_convs=1)
    return build_retinanet(**{**args, **kw})


def target(boxes, labels, crowd=None):
    t = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
         "labels": torch.tensor(labels, dtype=torch.int64)}  # fmt: skip
    if crowd is not None:
        t["crowd_boxes"] = torch.tensor(crowd, dtype=torch.float32).reshape(-1, 4)
    return t


def test_preprocess_pads_to_128_and_accepts_uint8_and_lists():
    model = tiny().eval()
    x, sizes = model.preprocess([torch.rand(3, 100, 130), torch.randint(0, 255, (3, 60, 40),
                                                                        dtype=torch.uint8)])
    assert x.shape == (2, 3, 128, 256) and sizes.tolist() == [[100, 130], [60, 40]]
    assert torch.count_nonzero(x[1, :, 60:]) == 0 and torch.count_nonzero(x[1, :, :, 40:]) == 0
    y, _ = model.preprocess(torch.full((1, 3, 64, 64), 0.5))
    expected = (0.5 - model.pixel_mean) / model.pixel_std
    torch.testing.assert_close(y[0, :, 0, 0], expected.flatten())
    with pytest.raises(ValueError, match=r"images\[1\]"):
        model.preprocess([torch.rand(3, 8, 8), torch.rand(8, 8)])


def test_image_without_boxes_gives_zero_box_loss_and_finite_cls():
    model = tiny().train()
    out, stats = model(torch.rand(2, 3, 64, 64), [target([], []), target([], [])])
    assert out["loss_box_reg"].item() == 0.0 and math.isfinite(out["loss_cls"].item())
    assert out["loss_cls"].item() > 0 and stats["num_pos"].item() == 0
    assert stats["normalizer"].item() == 1.0  # max(num_pos, 1)
    sum(out.values()).backward()  # gradients flow with no foreground at all


def test_crowd_only_image():
    model = tiny().train()
    t = [target([], [], crowd=[[8, 8, 56, 56]]), target([[4, 4, 40, 40]], [2])]
    out, stats = model(torch.rand(2, 3, 64, 64), t)
    assert stats["num_pos"].item() > 0 and math.isfinite(out["loss_cls"].item())
    crowd_only, stats = model(torch.rand(1, 3, 64, 64), t[:1])
    assert crowd_only["loss_box_reg"].item() == 0.0 and stats["num_pos"].item() == 0


def test_bad_targets_give_one_line_errors():
    model = tiny().train()
    with pytest.raises(ValueError, match=r"targets\[1\]: invalid box"):
        model(torch.rand(2, 3, 64, 64), [target([[1, 1, 9, 9]], [0]), target([[5, 5, 5, 9]], [0])])
    with pytest.raises(ValueError, match=r"targets\[0\].*label"):
        model(torch.rand(1, 3, 64, 64), [target([[1, 1, 9, 9]], [3])])
    with pytest.raises(ValueError, match="needs targets"):
        model(torch.rand(1, 3, 64, 64))


def test_loss_at_init_is_what_the_prior_predicts():
    k = 3
    model = tiny(prior_prob=0.01).train()
    t = [target([[8, 8, 40, 48], [30, 20, 60, 60]], [0, 2])]
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        model.head.cls_score.weight.zero_()  # logits exactly at the prior bias
        out, stats = model(images, t)
        feats = model.fpn(model.backbone(model.preprocess(images)[0]))
        anchors = model.anchor_generator([f.shape[-2:] for f in feats], torch.device("cpu"))
    from retina.ops.boxes import batched_pairwise_iou

    matched = model.matcher(batched_pairwise_iou(t[0]["boxes"][None], anchors),
                            torch.ones(1, 2, dtype=torch.bool))  # fmt: skip
    pos, neg = int((matched >= 0).sum()), int((matched == -1).sum())
    p, a, g = 0.01, 0.25, 2.0
    l_pos = a * (1 - p) ** g * -math.log(p)
    l_neg = (1 - a) * p**g * -math.log(1 - p)
    expected = (pos * (l_pos + (k - 1) * l_neg) + neg * k * l_neg) / pos
    assert pos == stats["num_pos"].item() == stats["normalizer"].item()
    assert out["loss_cls"].item() == pytest.approx(expected, rel=1e-4)
    # with random head weights the mean initial score is still about pi
    fresh = tiny(prior_prob=0.01).eval()
    with torch.no_grad():
        logits, _ = fresh.head(fresh.fpn(fresh.backbone(fresh.preprocess(images)[0])))
    assert float(logits.sigmoid().mean()) == pytest.approx(0.01, rel=0.05)


@pytest.mark.parametrize("normalizer", ["batch", "image", "ema"])
def test_normalizers(normalizer):
    model = tiny(loss_normalizer=normalizer).train()
    t = [target([[8, 8, 40, 48]], [0]), target([[4, 4, 60, 60], [30, 30, 50, 50]], [1, 2])]
    images = torch.rand(2, 3, 64, 64)
    out, stats = model(images, t)
    assert all(torch.isfinite(v) for v in out.values())
    num_pos = stats["num_pos"].item()
    levels = [stats[f"num_pos_p{i}"].item() for i in range(3, 8)]
    assert num_pos > 0 and sum(levels) == num_pos and set(stats) == {
        "num_pos", "normalizer", "num_pos_p3", "num_pos_p4", "num_pos_p5", "num_pos_p6",
        "num_pos_p7"}  # fmt: skip
    assert not any(v.requires_grad for v in stats.values())
    if normalizer == "ema":
        expected = 0.9 * 100 + 0.1 * num_pos
        assert model.normalizer_ema.item() == pytest.approx(expected)
        assert stats["normalizer"].item() == pytest.approx(expected)
    elif normalizer == "image":  # the mean of the per-image max(n_i, 1)
        per_image = model.assign(images, t).foreground.sum(dim=1).clamp(min=1)
        assert stats["normalizer"].item() == per_image.double().mean().item()
    else:
        assert stats["normalizer"].item() == num_pos


def test_inference_format_and_limits():
    model = tiny(score_thresh=0.0, detections_per_img=7, prior_prob=0.3).eval()
    dets = model([torch.rand(3, 70, 90), torch.rand(3, 64, 50)])
    assert len(dets) == 2
    for d, (h, w) in zip(dets, [(70, 90), (64, 50)], strict=True):
        assert set(d) == {"boxes", "scores", "labels"}
        assert d["boxes"].shape == (7, 4) and d["labels"].dtype == torch.int64
        assert (d["scores"][:-1] >= d["scores"][1:]).all()
        assert (d["boxes"][:, 0::2] <= w).all() and (d["boxes"][:, 1::2] <= h).all()
        assert (d["boxes"] >= 0).all() and (d["labels"] < 3).all()
    none = tiny(score_thresh=0.99).eval()(torch.rand(1, 3, 64, 64))
    assert none[0]["boxes"].shape == (0, 4)


def test_inference_is_per_image_independent():
    model = tiny(score_thresh=0.0, prior_prob=0.3).eval()
    a, b = torch.rand(3, 64, 64), torch.rand(3, 64, 64)
    together = model([a, b])
    alone = model([b])[0]
    torch.testing.assert_close(together[1]["boxes"], alone["boxes"])
    torch.testing.assert_close(together[1]["scores"], alone["scores"])


@pytest.mark.parametrize("cls_loss", [FocalLoss(), OHEMLoss(batch_size_per_image=64)])
def test_training_on_one_batch_drives_loss_down(cls_loss):
    model = tiny(cls_loss=cls_loss).train()
    images = torch.rand(2, 3, 64, 64)
    t = [target([[8, 8, 40, 48]], [0]), target([[4, 4, 60, 60], [30, 30, 50, 50]], [1, 2])]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    losses = []
    for _ in range(15):
        out = model(images, t).losses
        loss = out["loss_cls"] + out["loss_box_reg"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_level_topk_equals_topk_over_all_pairs():
    model = tiny(topk_candidates=100)
    logits = torch.randn(2, 5000, 7, generator=torch.Generator().manual_seed(0))
    top, anchor, label = model._level_topk(logits)
    ref_top, ref_flat = logits.flatten(1).topk(100, dim=1)
    torch.testing.assert_close(top, ref_top, rtol=0, atol=0)
    assert torch.equal(anchor * 7 + label, ref_flat)
    small = tiny(topk_candidates=1000)._level_topk(logits[:, :50])  # fewer pairs than k
    assert small[0].shape == (2, 350)

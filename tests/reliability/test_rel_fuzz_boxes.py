"""Hypothesis fuzzing of the box maths: box coder round trip and decoding of extreme deltas,
IoU invariants (incl. degenerate boxes, parity with torchvision) and matcher invariants."""

from __future__ import annotations

import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from relhelp import FUZZ_EXAMPLES
from torchvision.ops import box_iou

from retina.modeling.box_coder import BoxCoder
from retina.modeling.matcher import BACKGROUND, IGNORE, Matcher
from retina.ops.boxes import batched_pairwise_iou

FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None)
coords = st.floats(-2000, 2000, allow_nan=False, width=32)
sizes = st.floats(1.0, 1000.0, width=32)
# Degenerate sizes on purpose: zero, negative (x2 < x1), tiny.
any_sizes = st.one_of(sizes, st.just(0.0), st.floats(-50, 0, width=32), st.just(1e-6))


@st.composite
def boxes(draw, n: int, size=sizes) -> torch.Tensor:
    """``(n, 4)`` xyxy float32 boxes whose width/height come from ``size``."""
    rows = []
    for _ in range(n):
        x, y, w, h = draw(coords), draw(coords), draw(size), draw(size)
        rows.append([x, y, x + w, y + h])
    return torch.tensor(rows, dtype=torch.float32).reshape(n, 4)


@FUZZ
@given(
    st.integers(1, 16).flatmap(
        lambda n: st.tuples(boxes(n, st.floats(4.0, 1000.0)), boxes(n, st.floats(16.0, 256.0)))
    )
)
def test_box_coder_round_trip(pair) -> None:
    gt, anchors = pair
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    ratio = ((gt[:, 2:] - gt[:, :2]) / (anchors[:, 2:] - anchors[:, :2])).log().abs()
    assume(bool((ratio < coder.scale_clamp).all()))  # beyond it decoding clamps by design
    deltas = coder.encode(gt, anchors)
    assert torch.isfinite(deltas).all()
    decoded = coder.decode(deltas, anchors)
    scale = (anchors[:, 2:] - anchors[:, :2]).repeat(1, 2) + gt.abs()
    assert ((decoded - gt).abs() <= 1e-2 + 1e-5 * scale).all(), (decoded - gt).abs().max()


@FUZZ
@given(
    st.integers(1, 16).flatmap(
        lambda n: st.tuples(
            boxes(n),
            st.lists(
                st.one_of(st.floats(-1e4, 1e4, width=32), st.sampled_from([-1e4, 1e4, 0.0])),
                min_size=4 * n,
                max_size=4 * n,
            ),
        )
    ),
    st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
)
def test_decoding_extreme_deltas_gives_finite_ordered_boxes(case, dtype) -> None:
    """Head outputs can be anything; decoding must not overflow (dw/dh clamp) nor flip."""
    anchors, values = case
    deltas = torch.tensor(values, dtype=torch.float32).reshape(-1, 4).to(dtype)
    decoded = BoxCoder().decode(deltas, anchors.to(dtype))
    assert decoded.dtype == torch.float32
    assert torch.isfinite(decoded).all()
    assert (decoded[:, 2] >= decoded[:, 0]).all() and (decoded[:, 3] >= decoded[:, 1]).all()


@FUZZ
@given(
    st.integers(1, 6).flatmap(lambda m: boxes(m, any_sizes)),
    st.integers(1, 12).flatmap(lambda a: boxes(a, any_sizes)),
)
def test_iou_is_bounded_symmetric_and_matches_torchvision(b1, b2) -> None:
    iou = batched_pairwise_iou(b1[None], b2)[0]
    assert iou.shape == (len(b1), len(b2))
    assert not torch.isnan(iou).any(), "degenerate boxes must give 0, not NaN"
    assert ((iou >= 0) & (iou <= 1 + 1e-6)).all()
    assert torch.allclose(iou, batched_pairwise_iou(b2[None], b1)[0].T, atol=1e-6)
    proper1 = ((b1[:, 2:] - b1[:, :2]) > 0).all(dim=1)
    proper2 = ((b2[:, 2:] - b2[:, :2]) > 0).all(dim=1)
    if proper1.any() and proper2.any():
        ours, ref = iou[proper1][:, proper2], box_iou(b1[proper1], b2[proper2])
        finite = torch.isfinite(ref)
        assert torch.allclose(ours[finite], ref[finite], atol=1e-5)
    self_iou = batched_pairwise_iou(b1[None], b1)[0].diagonal()
    area = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    big = proper1 & (area > 1e-3)
    assert torch.allclose(self_iou[big], torch.ones_like(self_iou[big]), atol=1e-5)


@st.composite
def matcher_case(draw):
    batch = draw(st.integers(1, 3))
    m = draw(st.integers(0, 5))
    anchors = draw(boxes(draw(st.integers(1, 20)), any_sizes))
    gt = torch.stack([draw(boxes(m, any_sizes)) for _ in range(batch)])  # (B, M, 4)
    flags = st.lists(st.booleans(), min_size=batch * m, max_size=batch * m)
    valid = torch.tensor(draw(flags), dtype=torch.bool)
    crowd = torch.tensor(draw(flags), dtype=torch.bool)
    valid, crowd = valid.reshape(batch, m), crowd.reshape(batch, m)
    crowd = crowd & valid
    fg = draw(st.sampled_from([0.5, 0.3, 0.7, 1.0]))
    bg = draw(st.floats(0.0, fg))
    low_quality = draw(st.booleans())
    use_crowd = draw(st.booleans())
    return gt, anchors, valid, crowd if use_crowd else None, fg, bg, low_quality


@FUZZ
@given(matcher_case())
def test_matcher_invariants(case) -> None:
    gt, anchors, valid, crowd, fg, bg, low_quality = case
    iou = batched_pairwise_iou(gt, anchors)  # (B, M, A)
    matches = Matcher(fg, bg, allow_low_quality_matches=low_quality)(iou, valid, crowd)
    b, m, a = iou.shape
    assert matches.shape == (b, a) and matches.dtype == torch.int64
    assert (((matches >= 0) & (matches < max(m, 1))) | (matches == BACKGROUND)
            | (matches == IGNORE)).all()  # fmt: skip
    normal = valid if crowd is None else valid & ~crowd
    best = iou.masked_fill(~normal[:, :, None], -1.0).max(dim=1).values if m else None
    for i in range(b):
        for j in range(a):
            k = int(matches[i, j])
            if k >= 0:
                assert bool(normal[i, k]), "matched to padding or a crowd box"
                assert float(iou[i, k, j]) == float(best[i, j]), "not the anchor's best box"
                if not low_quality:
                    assert float(iou[i, k, j]) >= fg
            elif k == BACKGROUND and m:
                assert float(best[i, j]) < bg, "background despite an overlap >= bg_iou_thresh"
    if m == 0 or not bool(normal.any()):
        assert not (matches >= 0).any()

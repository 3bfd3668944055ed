"""Box coder: round trip (hypothesis), clamping, fp32 decoding, torchvision parity."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

from retina.modeling import BoxCoder

coords = st.floats(min_value=0, max_value=1000, allow_nan=False, width=32)
sizes = st.floats(min_value=1, max_value=800, allow_nan=False, width=32)
weights = st.sampled_from([(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])


@settings(max_examples=60, deadline=None)
@given(x=coords, y=coords, w=sizes, h=sizes, ax=coords, ay=coords, aw=sizes, ah=sizes, wt=weights)
def test_round_trip(x, y, w, h, ax, ay, aw, ah, wt):
    coder = BoxCoder(wt)
    box = torch.tensor([[x, y, x + w, y + h]], dtype=torch.float64)
    anchor = torch.tensor([[ax, ay, ax + aw, ay + ah]], dtype=torch.float64)
    deltas = coder.encode(box, anchor)
    if deltas[0, 2:].abs().max() / min(wt[2:]) > math.log(1000 / 16):
        return  # beyond the clamp, decoding is intentionally not the inverse
    torch.testing.assert_close(coder.decode(deltas, anchor).double(), box, rtol=1e-4, atol=1e-2)


def test_clamp_and_fp32_decoding():
    coder = BoxCoder()
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    out = coder.decode(torch.tensor([[0.0, 0.0, 50.0, 50.0]], dtype=torch.float16), anchor)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out[0, 2] - out[0, 0], torch.tensor(1000.0))


def test_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 500
    anchors = torch.cat([xy, xy + 8 + torch.rand(50, 2, generator=g) * 300], 1)
    xy = torch.rand(50, 2, generator=g) * 500
    boxes = torch.cat([xy, xy + 4 + torch.rand(50, 2, generator=g) * 300], 1)
    tv = TVBoxCoder((1.0, 1.0, 1.0, 1.0))
    ours = BoxCoder()
    torch.testing.assert_close(ours.encode(boxes, anchors), tv.encode_single(boxes, anchors))
    deltas = torch.randn(50, 4, generator=g)
    torch.testing.assert_close(
        ours.decode(deltas, anchors), tv.decode_single(deltas, anchors), rtol=0, atol=0
    )

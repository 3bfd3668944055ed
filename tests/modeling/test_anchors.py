"""Anchors: hand-computed values, the paper's layout, torchvision parity, caching."""

import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from retina.modeling import AnchorGenerator


def test_hand_computed_single_level():
    gen = AnchorGenerator(sizes=(32,), strides=(8,), num_scales=1, aspect_ratios=(1.0,))
    anchors = gen([(2, 3)], torch.device("cpu"))
    # centres at (0,0), (8,0), (16,0), (0,8), ... row-major; 32x32 boxes
    expected = torch.tensor(
        [[cx - 16, cy - 16, cx + 16, cy + 16] for cy in (0, 8) for cx in (0, 8, 16)],
        dtype=torch.float32,
    )
    torch.testing.assert_close(anchors, expected)


def test_paper_sizes_ratios_and_offset():
    gen = AnchorGenerator(sizes=(32,), strides=(8,), offset=0.5)
    a = gen([(1, 1)], torch.device("cpu")).double()
    assert a.shape == (9, 4)
    w, h = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    # ratio-major, scale-minor: ratio 0.5 (h/w) first, scales 32 * 2^(i/3)
    for r_i, ratio in enumerate((0.5, 1.0, 2.0)):
        for s_i in range(3):
            size = 32 * 2 ** (s_i / 3)
            j = r_i * 3 + s_i
            assert math.isclose(float(w[j] * h[j]), size**2, rel_tol=1e-5)
            assert math.isclose(float(h[j] / w[j]), ratio, rel_tol=1e-5)
    # offset 0.5: centred on the cell (4, 4)
    torch.testing.assert_close((a[:, :2] + a[:, 2:]) / 2, torch.full((9, 2), 4.0).double())


def test_torchvision_compat_matches_torchvision():
    bases = (32, 64, 128, 256, 512)
    sizes = tuple((x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in bases)
    tv = TVAnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    grids = [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
    feats = [torch.zeros(1, 1, h, w) for h, w in grids]
    images = ImageList(torch.zeros(1, 3, 256, 384), [(256, 384)])
    expected = tv(images, feats)[0]
    ours = AnchorGenerator(torchvision_compat=True)(grids, torch.device("cpu"))
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    floats = AnchorGenerator()(grids, torch.device("cpu"))
    assert not torch.equal(floats, expected)  # float sizes differ from truncated ones


def test_cached_per_shape_and_counts():
    gen = AnchorGenerator()
    grids = [(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
    a1 = gen(grids, torch.device("cpu"))
    assert gen(grids, torch.device("cpu")) is a1
    assert a1.shape[0] == sum(gen.num_anchors_per_level(grids)) == 9 * (16 + 4 + 3)
    assert gen([(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)], torch.device("cpu")) is not a1


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"sizes=\[32, 64\]: expected one size per level"):
        AnchorGenerator(sizes=(32, 64), strides=(8,))
    with pytest.raises(ValueError, match="feature maps"):
        AnchorGenerator()([(1, 1)], torch.device("cpu"))

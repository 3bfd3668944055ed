"""``build_retinanet``: the box decoding clamp and the EMA normaliser's momentum are keyword
arguments (config keys ``model.scale_clamp``, ``model.normalizer_momentum``), not patched
after the build."""

import math

import pytest
import torch

from retina.modeling import build_retinanet


def _tiny(**kw):
    return build_retinanet(num_classes=2, depth=10, norm="gn", freeze_at=0, fpn_channels=8,
                           num_convs=1, **kw)  # fmt: skip


def test_scale_clamp_and_normalizer_momentum_are_arguments():
    default = _tiny()
    assert default.box_coder.scale_clamp == pytest.approx(math.log(1000 / 16))
    assert default.normalizer_momentum == 0.9
    model = _tiny(scale_clamp=1.0, normalizer_momentum=0.5)
    assert model.box_coder.scale_clamp == 1.0 and model.normalizer_momentum == 0.5
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    boxes = model.box_coder.decode(torch.tensor([[0.0, 0.0, 5.0, 5.0]]), anchors)
    assert boxes[0, 2] - boxes[0, 0] == pytest.approx(10 * math.e, rel=1e-5)  # exp(clamp=1)
    with pytest.raises(ValueError, match="scale_clamp"):
        _tiny(scale_clamp=0.0)

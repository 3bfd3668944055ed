"""R50-FPN converted from torchvision (random weights, the classification layer re-drawn;
nothing downloaded): the ONNX graph against eager inference at 800x1333, 1333x800, and a
caller-padded batch of four."""

from __future__ import annotations

import pytest
import torch

from retina.export.exporter import build_export
from retina.export.parity import first_difference, sample_images, spread_scores


@pytest.fixture(scope="module")
def r50():
    from torchvision.models.detection import retinanet_resnet50_fpn

    from retina.modeling.torchvision import from_torchvision

    torch.manual_seed(0)
    tv = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).eval()
    cat_ids = list(range(1, 92))
    image = torch.stack(sample_images([(800, 1333)], seed=4))
    # thousands of candidates reach NMS, none saturated at 1.0 (ties): calibrated on the
    # sample image and the padded batch of the second test together
    model = spread_scores(from_torchvision(tv), torch.cat([image, padded_batch()]))
    _, run = build_export(model, cat_ids, "onnx", {}, image)
    return model, cat_ids, run


def padded_batch() -> torch.Tensor:
    """Four sizes on one 800x1333 canvas, padded with noise, not zeros: on a constant region a
    random-weight model scores every position exactly alike, and which of those tied boxes
    survives NMS is arbitrary in either runtime (the trained tiny model is checked with
    zero padding in test_graph.py)."""
    sizes = [(800, 1333), (800, 1066), (750, 1333), (608, 1000)]
    batch = torch.rand((4, 3, 800, 1333), generator=torch.Generator().manual_seed(8)) * 255
    batch = batch.round()
    for i, image in enumerate(sample_images(sizes, seed=7)):
        batch[i, :, : image.shape[1], : image.shape[2]] = image
    return batch


def check(model, cat_ids, run, batch):
    with torch.no_grad():
        eager = model(batch / 255.0)
    problem = first_difference(eager, run(batch), cat_ids, tuple(batch.shape[-2:]))
    assert problem is None, problem
    assert min(len(e["scores"]) for e in eager) > 0


@pytest.mark.slow
def test_r50_onnx_matches_eager_at_800x1333_both_ways(r50):
    for size in ((800, 1333), (1333, 800)):
        check(*r50, torch.stack(sample_images([size], seed=6)))


@pytest.mark.slow
def test_r50_onnx_matches_eager_on_a_padded_batch_of_four(r50):
    batch = padded_batch()
    check(*r50, batch)

"""retina.engine.build.wrap_model: what train.compile compiles."""

import torch
from trainer_helpers import tiny_model

from retina.engine.build import wrap_model
from retina.engine.distributed import DistInfo


def test_compile_compiles_the_dense_part_in_place():
    model = tiny_model()
    names = [name for name, _ in model.named_parameters()]
    net = wrap_model(model, torch.device("cpu"), DistInfo(), compile=True)
    assert net is model  # no wrapper: parameter names and checkpoints are unchanged
    assert [name for name, _ in net.named_parameters()] == names
    for part in (model.backbone, model.fpn, model.head):
        assert part._compiled_call_impl is not None
    assert model._compiled_call_impl is None  # matching, loss, postprocess stay eager


def test_no_compile_leaves_the_model_alone():
    model = tiny_model()
    assert wrap_model(model, torch.device("cpu"), DistInfo(), compile=False) is model
    assert model.backbone._compiled_call_impl is None

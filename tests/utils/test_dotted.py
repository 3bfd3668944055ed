"""The one dotted-key lookup (resume checks, sweep skip checks, report axes)."""

from __future__ import annotations

from omegaconf import OmegaConf

from retina.utils.dotted import select


def test_select_walks_nested_mappings_and_falls_back_to_the_default():
    config = {"loss": {"gamma": 2.0, "alpha": None}, "model": [1, 2]}
    assert select(config, "loss.gamma") == 2.0
    assert select(config, "loss") == {"gamma": 2.0, "alpha": None}
    missing = object()
    assert select(config, "loss.alpha", missing) is None  # present, null: not the default
    assert select(config, "loss.beta", missing) is missing
    assert select(config, "model.0", missing) is missing  # a list is not a mapping
    assert select(config, "loss.gamma.x") is None
    assert select(None, "loss") is None
    assert select(OmegaConf.create({"a": {"b": 3}}), "a.b") == 3  # any Mapping

"""Resume's config comparison: a model key missing from an older config means its default."""

from retina.engine.resume import changed_keys
from retina.modeling.build import model_defaults

TARGET = "retina.modeling.build_retinanet"


def test_model_keys_an_older_config_lacks_take_their_defaults():
    old = {"model": {"_target_": TARGET, "depth": 10, "fg_iou_thresh": 0.5}}
    new = {"model": {"_target_": TARGET, **model_defaults(), "depth": 10}}
    assert changed_keys(old, new) == []
    new["model"]["normalizer_momentum"] = 0.5  # not the default: a real change
    assert changed_keys(old, new) == ["model.normalizer_momentum"]


def test_other_nodes_still_count_a_missing_key():
    old = {"model": {"_target_": "retina.other", "depth": 10}, "loss": {"gamma": 2.0}}
    new = {"model": {"_target_": "retina.other", "depth": 10, "x": 1},
           "loss": {"gamma": 2.0, "alpha": 0.25}}  # fmt: skip
    assert changed_keys(old, new) == ["model.x", "loss.alpha"]


def test_the_focal_kernels_may_change_on_resume():
    """A run started with a backend this version removed (native C) resumes with ``auto``;
    the loss's numbers may not change."""
    old = {"loss": {"gamma": 2.0, "alpha": 0.25, "backend": "native"}}
    new = {"loss": {"gamma": 2.0, "alpha": 0.25, "backend": "auto"}}
    assert changed_keys(old, new) == []
    del new["loss"]["backend"]  # FL* takes no backend any more
    assert changed_keys(old, new) == []
    new["loss"]["gamma"] = 1.0
    assert changed_keys(old, new) == ["loss.gamma"]

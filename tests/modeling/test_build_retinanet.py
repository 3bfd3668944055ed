"""build_retinanet: each key's default is its part constructor's; errors name the key."""

import inspect

import pytest
import yaml

from retina.config import CONFIG_DIR
from retina.modeling import BoxCoder, Matcher, RetinaNet, build_retinanet
from retina.modeling.build import CONFIG_KEYS, model_defaults

SMALL = dict(num_classes=2, depth=10, norm="gn", freeze_at=0, fpn_channels=8, num_convs=1)
IDENTITY = {"_target_", "defaults", "depth", "weights"}  # what each model file is


def test_keys_left_out_take_the_constructors_defaults():
    model = build_retinanet(**SMALL)
    assert (model.matcher.fg_iou_thresh, model.matcher.bg_iou_thresh) == (
        Matcher().fg_iou_thresh, Matcher().bg_iou_thresh)  # fmt: skip
    assert model.box_coder.weights == BoxCoder().weights
    ours = inspect.signature(RetinaNet).parameters
    assert model.score_thresh == ours["score_thresh"].default
    assert model.normalizer_momentum == ours["normalizer_momentum"].default
    assert model.fpn.out_channels == 8 and model.head.cls_score.in_channels == 8


def test_signature_and_defaults_list_every_key():
    params = inspect.signature(build_retinanet).parameters
    assert list(params) == ["num_classes", "cls_loss", *CONFIG_KEYS]
    defaults = model_defaults()
    assert defaults["anchor_sizes"] == [32, 64, 128, 256, 512]  # AnchorGenerator's `sizes`
    assert defaults["head_norm"] is None and defaults["fpn_channels"] == 256
    assert "strides" not in defaults and "in_channels" not in defaults  # wired by the builder


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"anchor_sizes": [32, 64, 0, 256, 512]}, "anchor_sizes="),
        ({"anchor_sizes": [32, 64, 128]}, "anchor_sizes="),
        ({"head_norm": "bn"}, "head_norm="),
        ({"fpn_channels": 0}, "fpn_channels="),
        ({"fg_iou_thresh": 1.5}, "fg_iou_thresh="),
        ({"box_coder_weights": [1.0, 1.0]}, "box_coder_weights="),
    ],
)
def test_errors_name_the_config_key(override, message):
    with pytest.raises(ValueError) as err:
        build_retinanet(**{**SMALL, **override})
    assert str(err.value).startswith(message)


def test_unknown_key_is_refused():
    with pytest.raises(TypeError, match="'dropout'"):
        build_retinanet(**SMALL, dropout=0.1)


@pytest.mark.parametrize("path", sorted((CONFIG_DIR / "model").glob("*.yaml")), ids=str)
def test_model_files_state_choices_not_defaults(path):
    node = yaml.safe_load(path.read_text())
    assert node["defaults"] == ["/retinanet_defaults@_here_", "_self_"]
    defaults = model_defaults()
    copies = [k for k, v in node.items() if k not in IDENTITY and defaults.get(k) == v]
    assert not copies, f"{path.name} repeats constructor defaults: {copies}"
    assert set(node) - IDENTITY <= set(defaults)

"""The retinanet_defaults node: every model config composes with every key overridable."""

import pytest
from hydra import compose, initialize_config_dir

from retina.config import CONFIG_DIR
from retina.modeling.build import model_defaults


@pytest.mark.parametrize("model", sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml")))
def test_every_key_is_in_the_composed_config(model):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", "model.fg_iou_thresh=0.6",
                                          "model.normalizer_momentum=0.5"])
    assert set(model_defaults()) <= set(cfg.model)
    assert cfg.model.fg_iou_thresh == 0.6 and cfg.model.normalizer_momentum == 0.5
    assert cfg.model.bg_iou_thresh == model_defaults()["bg_iou_thresh"]

"""The dataset keyword arguments every data config builds its CocoDetection with."""

from omegaconf import OmegaConf

from retina.engine.inference import dataset_options


def test_dataset_options_from_a_data_config():
    data = OmegaConf.create({"root": "x", "max_broken_fraction": 0.25, "invalid_boxes": "error"})
    assert dataset_options(data) == {"max_broken_fraction": 0.25, "invalid_boxes": "error"}
    assert dataset_options(OmegaConf.create({"root": "x", "invalid_boxes": None})) == {}
    assert dataset_options({"max_broken_fraction": 0}) == {"max_broken_fraction": 0.0}

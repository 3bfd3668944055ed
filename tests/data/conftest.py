"""Shared fixtures: a tiny generated shapes dataset."""

from pathlib import Path

import pytest

from retina.data.shapes import make_shapes_dataset


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    """Ten train and four val images of 96x96, three classes (generated once per session)."""
    out = tmp_path_factory.mktemp("shapes")
    return make_shapes_dataset(out, train=10, val=4, size=96, seed=3, workers=1)

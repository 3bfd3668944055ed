"""Pretrained weights by torchvision name: hub cache, download with a progress bar, offline.

Never the real network: every test plants files in a temporary ``TORCH_HOME`` and refuses
connections (``torch.hub``'s ``urlopen`` raises the ``URLError`` a refused socket gives), or
replaces torch hub's download with a local copy (the ``torch_home`` fixture, conftest.py).
"""

import re
from pathlib import Path

import pytest
import torch
import torch.hub
from torchvision.models import ResNet18_Weights, resnet18

from retina.errors import ConfigError
from retina.modeling import ResNetBackbone
from retina.modeling.pretrained import load_weights, weights_cache_path

NAME = "ResNet18_Weights.IMAGENET1K_V1"


def test_cache_path_is_torch_hubs(torch_home):
    path = weights_cache_path(NAME)
    assert path == Path(torch.hub.get_dir()) / "checkpoints" / "resnet18-f37072fd.pth"
    assert path.parent == torch_home / "hub" / "checkpoints"
    assert ResNet18_Weights.IMAGENET1K_V1.url.endswith("/" + path.name)


def test_planted_file_in_the_cache_loads_without_network(torch_home):
    ref = resnet18()
    path = weights_cache_path(NAME)
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    bb = ResNetBackbone(depth=18, weights=NAME, norm="frozen_bn")
    torch.testing.assert_close(bb.body.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    torch.testing.assert_close(bb.body.bn1.running_var, ref.bn1.running_var)


def test_offline_one_line_names_url_and_cache_path(torch_home):
    url = ResNet18_Weights.IMAGENET1K_V1.url
    path = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(ConfigError) as info:
        ResNetBackbone(depth=18, weights=NAME)
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        f"weights={NAME}: cannot download {url} ([Errno 111] Connection refused); "
        f"put the file at {path}"
    )
    assert not path.exists() and not list(path.parent.glob("*"))  # no partial file left


def test_download_goes_through_torch_hub_with_progress_and_hash(torch_home, monkeypatch):
    """A missing file is fetched by torch hub into its cache: progress bar on, hash checked."""
    ref = resnet18()
    seen = {}

    def fake_download(url, dst, hash_prefix=None, progress=True):
        seen.update(url=url, dst=dst, hash_prefix=hash_prefix, progress=progress)
        torch.save(ref.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    state = load_weights(NAME)
    torch.testing.assert_close(state["fc.weight"], ref.fc.weight)
    assert seen == {
        "url": ResNet18_Weights.IMAGENET1K_V1.url,
        "dst": str(weights_cache_path(NAME)),
        "hash_prefix": "f37072fd",
        "progress": True,
    }
    assert weights_cache_path(NAME).is_file()  # the next call reads the cache
    monkeypatch.setattr(torch.hub, "download_url_to_file", None)
    torch.testing.assert_close(load_weights(NAME)["fc.weight"], ref.fc.weight)


def test_bad_names_and_files_are_one_line(torch_home, tmp_path):
    with pytest.raises(ConfigError, match=r"^weights=nonsense: neither an existing file"):
        load_weights("nonsense")
    with pytest.raises(ConfigError, match=r"missing\.pth: file not found$"):
        load_weights(str(tmp_path / "missing.pth"))
    garbage = weights_cache_path(NAME)
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match=re.escape(f"weights={garbage}: cannot be read")):
        load_weights(NAME)

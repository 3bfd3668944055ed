"""``ALLOWED_TARGETS``: every ``_target_`` the shipped configs use is listed at its key, and
any ``_target_`` elsewhere in a config read from a file is refused before anything runs."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from retina.config import CONFIG_DIR
from retina.errors import CheckpointError
from retina.utils.instantiate import ALLOWED_TARGETS, check_targets, instantiate_untrusted

WRITE = "retina.utils.io.write_text_atomic"
UNLINK = "retina.engine.checkpoint._unlink_quietly"
GROUPS = {g: sorted(p.stem for p in (CONFIG_DIR / g).glob("*.yaml"))
          for g in ("model", "loss", "data")}


@cache
def _composed(overrides: tuple[str, ...]) -> dict[str, Any]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=False)


def _config(overrides: list[str]) -> dict[str, Any]:
    return copy.deepcopy(_composed(tuple(overrides)))


@pytest.mark.parametrize(("group", "name"), [(g, n) for g, names in GROUPS.items()
                                             for n in names])
def test_every_shipped_config_passes(group: str, name: str) -> None:
    check_targets(_config([f"{group}={name}"]), "train.yaml")


def _set(config: dict[str, Any], dotted: str, value: Any) -> None:
    """``config[a][b][0][c] = value`` for ``"a.b[0].c"``, creating mappings on the way."""
    node: Any = config
    parts = dotted.replace("[", ".[").split(".")
    for part, nxt in zip(parts, parts[1:] + [None], strict=True):
        key: Any = int(part[1:-1]) if part.startswith("[") else part
        if nxt is None:
            node[key] = value
        else:
            if isinstance(key, int):
                if not isinstance(node[key], dict | list):
                    node[key] = {}
            elif not isinstance(node.get(key), dict | list):
                node[key] = {}
            node = node[key]


@pytest.mark.parametrize("key", [
    "model.pixel_mean",                      # the reproduction
    "model.pixel_std[1].deeper",             # below an element of a model argument
    "model.aspect_ratios[1]",                # inside a list
    "loss.alpha",                            # an argument of an allowed loss class
    "data.val_transforms.min_size.inner",    # two levels inside the transform builder's node
    "optim.optimizer.momentum",
    "train.extra",                           # a node that builds nothing
])
def test_a_nested_target_is_refused_naming_the_key(key: str, tmp_path: Path) -> None:
    config = _config([])
    marker = tmp_path / "written"
    _set(config, key, {"_target_": WRITE, "path": str(marker), "text": "pwned"})
    with pytest.raises(CheckpointError) as info:
        check_targets(config, "ckpt.pt: config")
    message = str(info.value)
    assert message.startswith(f"ckpt.pt: config.{key}: refusing _target_ '{WRITE}'"), message
    assert "\n" not in message


@pytest.mark.parametrize(("position", "target"), [
    ("model", "retina.modeling.losses.FocalLoss"),    # allowed, but not at this key
    ("loss", "retina.modeling.build_retinanet"),
    ("model", UNLINK),
    ("model", "retina.engine.checkpoint.os.system"),  # reached through a retina module
    ("data.val_transforms", "builtins.exec"),
])
def test_a_target_outside_its_list_is_refused(position: str, target: str, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    with pytest.raises(CheckpointError, match="refusing _target_"):
        instantiate_untrusted({"_target_": target, "path": str(victim)}, "f.pt: config", position)
    assert victim.exists()


def test_the_list_names_importable_builders() -> None:
    from hydra.utils import get_object

    for position, targets in ALLOWED_TARGETS.items():
        for target in targets:
            assert callable(get_object(target)), (position, target)

"""The config node ``retinanet_defaults``: every key of ``build_retinanet`` with the default
of the part constructor that owns it (:func:`retina.modeling.build.model_defaults`).

``configs/model/*.yaml`` extend it (``defaults: [/retinanet_defaults@_here_, _self_]``) and
list only their choices, so a composed config still holds every model key (each can be
overridden as ``model.KEY=VALUE``) while no YAML file copies a default. The node lives in
Hydra's ConfigStore: :func:`register_defaults` must run before a config is composed (the
console scripts, ``loss-cdf`` and the test suite call it; Hydra's launchers carry it into
their jobs).
"""

from __future__ import annotations

NODE = "retinanet_defaults"


def register_defaults() -> None:
    """Store :data:`NODE` in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    from retina.modeling.build import model_defaults

    ConfigStore.instance().store(name=NODE, node=model_defaults())

"""``build_retinanet``: the flat keyword builder that ``configs/model/*.yaml`` target.

Each flat key is an argument of exactly one part (backbone, FPN, anchor generator, head,
matcher, box coder, the ``RetinaNet`` meta-architecture) and that part's constructor owns
its default. This module only wires the parts together (channels, anchors per location,
classes) and routes each key to its part; :data:`PARTS` names the few keys that differ from
the argument they set (``anchor_sizes`` is the anchor generator's ``sizes``).
:func:`model_defaults` reads every default back from the constructors, so the YAML files
need to state only their choices.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from retina.modeling.anchors import AnchorGenerator
from retina.modeling.backbone import ResNetBackbone
from retina.modeling.box_coder import BoxCoder
from retina.modeling.fpn import FPN
from retina.modeling.head import RetinaNetHead
from retina.modeling.losses import FocalLoss
from retina.modeling.matcher import Matcher
from retina.modeling.retinanet import RetinaNet
from retina.utils.checks import check_int

__all__ = ["CONFIG_KEYS", "PARTS", "build_retinanet", "model_defaults"]


@dataclass(frozen=True)
class Part:
    """One built part: its constructor, its arguments whose config key has another name
    (``{argument: key}``) and the arguments :func:`build_retinanet` passes itself."""

    make: Callable[..., Any]
    renamed: Mapping[str, str] = field(default_factory=dict)
    wired: tuple[str, ...] = ()


PARTS: dict[str, Part] = {
    "backbone": Part(ResNetBackbone),
    "fpn": Part(FPN, {"out_channels": "fpn_channels"}, ("in_channels",)),
    "anchor_generator": Part(
        AnchorGenerator,
        {"sizes": "anchor_sizes", "offset": "anchor_offset",
         "torchvision_compat": "torchvision_anchors"},
        ("strides",),  # P3-P7, the FPN's levels
    ),
    "head": Part(RetinaNetHead, {"norm": "head_norm"},
                 ("in_channels", "num_anchors", "num_classes")),
    "matcher": Part(Matcher),
    "box_coder": Part(BoxCoder, {"weights": "box_coder_weights"}),
    "model": Part(RetinaNet, wired=("backbone", "fpn", "head", "anchor_generator", "matcher",
                                    "box_coder", "num_classes", "cls_loss")),
}  # fmt: skip
"""The parts of a RetinaNet, in build order (``model`` is the meta-architecture)."""

_ARGUMENT = re.compile(r"^(\w+)=")


def _config_keys() -> dict[str, tuple[str, inspect.Parameter]]:
    """``{flat key: (part, constructor parameter)}`` for every argument not wired."""
    keys: dict[str, tuple[str, inspect.Parameter]] = {}
    for part, spec in PARTS.items():
        for name, param in inspect.signature(spec.make).parameters.items():
            if name in spec.wired or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            key = spec.renamed.get(name, name)
            if key in keys:
                raise TypeError(f"config key {key!r} is taken by {keys[key][0]} and {part}; "
                                f"rename one in PARTS")  # fmt: skip
            keys[key] = (part, param)
    return keys


CONFIG_KEYS = _config_keys()


def model_defaults() -> dict[str, Any]:
    """Every config key of :func:`build_retinanet` with the default of the constructor that
    owns it (tuples as lists, ready for a config node)."""
    out = {}
    for key, (_, param) in CONFIG_KEYS.items():
        value = param.default
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


BUILD_TARGETS = ("retina.modeling.build_retinanet", "retina.modeling.build.build_retinanet")
"""The ``_target_`` spellings of :func:`build_retinanet` in configs."""


def with_model_defaults(node: Any) -> Any:
    """A ``model`` config node as :func:`build_retinanet` sees it: a key the node lacks takes
    the default of the part constructor that owns it (a config written before the key was
    listed means it). Any other node is returned as it is."""
    if not isinstance(node, Mapping) or node.get("_target_") not in BUILD_TARGETS:
        return node
    return {**model_defaults(), **node}


def _build(part: str, options: Mapping[str, Any], **wired: Any) -> Any:
    """``PARTS[part]`` built from its keys in ``options``; a ``ValueError`` naming a renamed
    argument (``sizes=...``) is raised again under its config key (``anchor_sizes=...``)."""
    spec = PARTS[part]
    args = {param.name: options[key] for key, (owner, param) in CONFIG_KEYS.items()
            if owner == part and key in options}  # fmt: skip
    try:
        return spec.make(**wired, **args)
    except ValueError as err:
        match = _ARGUMENT.match(str(err))
        if match is None or match.group(1) not in spec.renamed:
            raise
        raise ValueError(spec.renamed[match.group(1)] + str(err)[match.end(1):]) from None


def build_retinanet(
    *, num_classes: int, cls_loss: Callable[..., Tensor] | None = None, **options: Any
) -> RetinaNet:
    """Build a RetinaNet from flat keyword arguments (one config key each).

    ``options`` are the keys of :data:`CONFIG_KEYS` (see this function's signature or
    :func:`model_defaults`); each part's constructor owns the default of a key left out.
    ``cls_loss=None`` means ``FocalLoss()`` (gamma 2, alpha 0.25). The defaults are the
    paper's where it is explicit, else detectron2's: ResNet-50 with frozen BN and frozen
    stem + res2, FPN 256 with P6 from C5, 4 x 256 head convs, prior 0.01, anchors 32-512 with
    3 scales x 3 ratios, IoU 0.5 / 0.4 with low-quality matches, smooth-L1 beta 0.1, the
    batch's foreground count as normaliser, inference 0.05 / 1000 / 0.5 / 100 detections.

    Raises:
        TypeError: a key that no part takes. ValueError: ``key=value: reason`` from the
            constructor that owns ``key``.
    """
    unknown = sorted(set(options) - set(CONFIG_KEYS))
    if unknown:
        raise TypeError(f"build_retinanet() got an unexpected keyword argument {unknown[0]!r}")
    check_int("num_classes", num_classes)
    backbone = _build("backbone", options)
    fpn = _build("fpn", options, in_channels=backbone.out_channels)
    anchor_generator = _build("anchor_generator", options)
    head = _build("head", options, in_channels=fpn.out_channels,
                  num_anchors=anchor_generator.num_anchors, num_classes=num_classes)  # fmt: skip
    return _build(
        "model", options, backbone=backbone, fpn=fpn, head=head,
        anchor_generator=anchor_generator, matcher=_build("matcher", options),
        box_coder=_build("box_coder", options), num_classes=num_classes,
        cls_loss=cls_loss if cls_loss is not None else FocalLoss(),
    )  # fmt: skip


build_retinanet.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        inspect.Parameter("num_classes", inspect.Parameter.KEYWORD_ONLY, annotation="int"),
        inspect.Parameter("cls_loss", inspect.Parameter.KEYWORD_ONLY, default=None,
                          annotation="Callable[..., Tensor] | None"),  # fmt: skip
        *(inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=p.default,
                            annotation=p.annotation)
          for key, (_, p) in CONFIG_KEYS.items()),
    ],  # fmt: skip
    return_annotation="RetinaNet",
)

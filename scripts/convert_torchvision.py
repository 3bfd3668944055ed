#!/usr/bin/env python
"""Convert a saved torchvision RetinaNet state dict into a checkpoint ``retina-eval`` accepts.

    python scripts/convert_torchvision.py RetinaNet_ResNet50_FPN_Weights.COCO_V1 r50_v1.pt
    python scripts/convert_torchvision.py RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1 r50_v2.pt
    python scripts/convert_torchvision.py retinanet_resnet50_fpn_coco-eeacb38b.pth r50_v1.pt

The input is a local state dict file or a torchvision RetinaNet weights name; a name is read
from the torch hub cache (``$TORCH_HOME/hub/checkpoints``) or downloaded into it by torch hub,
with a progress bar (offline: one line naming the URL and the path to put the file at).

v1 (P6 from P5, L1 box loss) or v2 (P6 from C5, GroupNorm heads, GIoU) is recognised from
the weights. The backbone's norm epsilon is not stored in a state dict: by default v1 gets
0.0 (torchvision sets it for its COCO_V1 weights) and v2 1e-5; ``--norm-eps`` overrides.
torchvision's 91 outputs are COCO category ids (0 = background, some ids unused), so the
checkpoint's ``cat_ids`` maps label i to category id i. Evaluate at torchvision's resolution
(shorter side 800, longer side at most 1333) to reproduce its 36.4 / 41.5 AP.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from retina.errors import ConfigError, ResultsError
from retina.modeling.pretrained import is_weights_file, load_weights
from retina.modeling.torchvision import convert_state_dict, infer_config_from_state_dict
from retina.utils.io import atomic_write, require_output_file

WEIGHTS_NAMES = (
    "RetinaNet_ResNet50_FPN_Weights.COCO_V1",
    "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1",
)


def _load_state(source: str) -> dict:
    """State dict of a local file, or of a torchvision RetinaNet weights name (hub cache or
    download)."""
    if not is_weights_file(source):
        if not source.startswith("RetinaNet_"):
            raise SystemExit(f"{source}: neither an existing file nor a torchvision RetinaNet "
                             f"weights name ({' or '.join(WEIGHTS_NAMES)})")  # fmt: skip
        try:
            return load_weights(source)
        except ConfigError as err:
            raise SystemExit(str(err)) from None
    path = Path(source)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SystemExit(f"{path}: file not found") from None
    except Exception as err:  # noqa: BLE001 - reported as one line
        raise SystemExit(f"{path}: not a readable torch file ({type(err).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise SystemExit(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def build_checkpoint(state: dict, norm_eps: float | None = None) -> dict:
    """Checkpoint dict (``model``, ``config``, ``cat_ids``, ``class_names``, ``iteration``)."""
    cfg = infer_config_from_state_dict(state)
    if norm_eps is not None:
        cfg["norm_eps"] = float(norm_eps)
    cfg["weights"] = None
    num_classes = cfg["num_classes"]
    names = [str(i) for i in range(num_classes)]
    if num_classes == 91:
        from torchvision.models.detection.retinanet import _COCO_CATEGORIES

        names = list(_COCO_CATEGORIES)
    model_cfg = {"_target_": "retina.modeling.build_retinanet", **cfg}
    del model_cfg["num_classes"]  # rebuilt from len(cat_ids), as for trained checkpoints
    return {
        "model": convert_state_dict(state),
        "iteration": 0,
        "config": {
            "model": model_cfg,
            "loss": {"_target_": "retina.modeling.losses.FocalLoss", "gamma": 2.0, "alpha": 0.25},
        },
        "cat_ids": list(range(num_classes)),
        "class_names": names,
        "source": "torchvision",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="torchvision RetinaNet state dict (.pth) or weights name "
                        "(RetinaNet_ResNet50_FPN_Weights.COCO_V1, ..._V2_Weights.COCO_V1)")
    parser.add_argument("output", type=Path, help="checkpoint to write")
    parser.add_argument("--norm-eps", type=float, default=None, help="backbone norm epsilon")
    args = parser.parse_args(argv)
    try:
        require_output_file(args.output, "output")
    except ResultsError as exc:
        raise SystemExit(f"convert_torchvision: error: {exc}") from None
    state = _load_state(args.input)
    try:
        ckpt = build_checkpoint(state, args.norm_eps)
    except ValueError as err:
        raise SystemExit(f"{args.input}: {err}") from None
    from retina.modeling import build_retinanet

    kwargs = {k: v for k, v in ckpt["config"]["model"].items() if k != "_target_"}
    kwargs["num_classes"] = len(ckpt["cat_ids"])
    model = build_retinanet(**kwargs)
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    missing = [k for k in missing if not k.startswith(("pixel_", "normalizer_ema"))]
    if missing or unexpected:
        raise SystemExit(f"{args.input}: does not fit the model (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")  # fmt: skip
    ckpt["model"] = model.state_dict()  # complete, with the normalisation buffers
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.output, lambda handle: torch.save(ckpt, handle))
    except OSError as err:
        raise SystemExit(f"convert_torchvision: error: {args.output}: cannot write "
                         f"({err.strerror or err})") from None
    kind = "v2" if kwargs["p6_from"] == "c5" else "v1"
    print(f"wrote {args.output}: torchvision RetinaNet {kind}, {kwargs['num_classes']} classes, "
          f"ResNet-{kwargs['depth']}, norm_eps={kwargs['norm_eps']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

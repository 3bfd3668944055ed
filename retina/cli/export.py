"""``retina-export``: a checkpoint as an ONNX model or a ``torch.export`` program, with
post-processing in the graph (thin Hydra entry point; the contract is docs/deploy.md).

    retina-export checkpoint=PATH format=onnx out=FILE.onnx
    retina-export checkpoint=PATH format=torch_export out=FILE.pt2

The export is run on sample images against eager inference before anything is written; a
model that differs is refused with one line naming the output.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from retina.cli.common import hydra_main, required_value

log = logging.getLogger("retina.export")


def export(cfg: DictConfig) -> dict:
    """Everything ``retina-export`` does; returns the metadata written."""
    from retina.export.exporter import export_checkpoint

    checkpoint = required_value(cfg, "checkpoint")
    out = Path(required_value(cfg, "out"))
    fmt = required_value(cfg, "format")
    metadata = export_checkpoint(checkpoint, fmt, out, score_thresh=cfg.get("score_thresh"))
    names = ", ".join(f"{c} {n}" for c, n in metadata["class_names"].items())
    print(f"wrote {out} ({fmt}; classes {names}; min_size {metadata['min_size']}, "
          f"max_size {metadata['max_size']})", flush=True)  # fmt: skip
    return metadata


main = hydra_main(export, "retina-export", "export")


if __name__ == "__main__":
    main()

"""``retina-export``'s work: a checkpoint -> an ONNX model or a ``torch.export`` program, checked
against eager inference before anything is written.

Both formats trace :class:`~retina.export.graph.DetectionGraph` once with ``torch.export``
(batch, height and width dynamic); ONNX is translated from that program by the dynamo
exporter (opset 18) with NMS as ONNX's ``NonMaxSuppression``. The metadata (docs/deploy.md)
goes into the ONNX model's ``metadata_props``, and beside a ``.pt2`` as ``<out>.json`` (and
inside it as the extra file ``retina.json``).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from retina.errors import ConfigError, ExportError
from retina.export.graph import INPUT_NAME, OUTPUT_NAMES, DetectionGraph
from retina.export.parity import first_difference, sample_images

__all__ = [
    "FORMATS",
    "SUFFIXES",
    "GRAPH_VERSION",
    "export_checkpoint",
    "build_export",
    "build_metadata",
    "trace_graph",
    "check_parity",
]

log = logging.getLogger("retina.export")

FORMATS = ("onnx", "torch_export")
SUFFIXES = {"onnx": ".onnx", "torch_export": ".pt2"}
GRAPH_VERSION = "1"  # the contract of docs/deploy.md; readers refuse other versions
OPSET = 18
Runner = Callable[[torch.Tensor], Sequence[Any]]


def build_metadata(state: Mapping[str, Any], checkpoint: str, model: torch.nn.Module) -> dict:
    """What a deployed model needs to be run as retina ran it (all values JSON-friendly)."""
    from retina import __version__

    config = state.get("config") if isinstance(state.get("config"), Mapping) else {}
    data = config.get("data") if isinstance(config.get("data"), Mapping) else {}
    resize = data.get("val_transforms") if isinstance(data.get("val_transforms"), Mapping) else {}
    return {
        "retina.graph": GRAPH_VERSION,
        "retina.version": __version__,
        "retina.checkpoint": str(Path(checkpoint).resolve()),
        "retina.iteration": int(state.get("iteration", -1)),
        "min_size": resize.get("min_size"),
        "max_size": resize.get("max_size"),
        "class_names": {
            str(int(c)): str(n) for c, n in zip(state["cat_ids"], state["class_names"], strict=True)
        },
        "score_thresh": float(model.score_thresh),
        "nms_thresh": float(model.nms_thresh),
        "detections_per_img": int(model.detections_per_img),
        "size_divisibility": int(model.size_divisibility),
        "retina.config": {key: config.get(key) for key in ("model", "loss", "data")},
    }


def trace_graph(graph: DetectionGraph, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of ``graph`` with batch, height and width dynamic.

    Heights and widths start above ``size_divisibility`` (129 px for 128): at or below it the
    coarsest level is 1x1, which the trace specialises away.
    """
    low = graph.model.size_divisibility + 1
    dims = {
        0: torch.export.Dim("batch", min=1, max=1024),
        2: torch.export.Dim("height", min=low, max=16384),
        3: torch.export.Dim("width", min=low, max=16384),
    }
    with torch.no_grad():
        return torch.export.export(graph, (example,), dynamic_shapes={INPUT_NAME: dims})


def _onnx_bytes(program: torch.export.ExportedProgram, metadata: Mapping[str, Any]) -> bytes:
    """The ONNX model of ``program`` with ``metadata`` as ``metadata_props`` (JSON values)."""
    import onnx

    from retina.export.nms import class_nms_onnx

    onnx_program = torch.onnx.export(
        program, dynamo=True, opset_version=OPSET, input_names=[INPUT_NAME],
        output_names=list(OUTPUT_NAMES), verbose=False,
        custom_translation_table={torch.ops.retina.class_nms.default: class_nms_onnx},
    )  # fmt: skip
    proto = onnx_program.model_proto
    foreign = sorted({n.domain for n in proto.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise ExportError(f"the ONNX graph needs custom op domains {foreign}")
    onnx.helper.set_model_props(proto, {key: json.dumps(v) for key, v in metadata.items()})
    proto.producer_name = "retina-export"
    return proto.SerializeToString()


def _onnx_runner(data: bytes) -> Runner:
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return lambda images: session.run(None, {INPUT_NAME: images.numpy()})


def check_parity(
    model: torch.nn.Module, run: Runner, cat_ids: Sequence[int], batches: Sequence[torch.Tensor]
) -> None:
    """Run eager inference and the exported model on each batch ``(N, 3, H, W)`` 0-255.

    Raises:
        ExportError: one line naming the batch, image and output that differ.
    """
    for batch in batches:
        with torch.no_grad():
            eager = model(batch / 255.0)
        problem = first_difference(eager, run(batch), cat_ids, tuple(batch.shape[-2:]))
        if problem is not None:
            shape = "x".join(str(v) for v in batch.shape)
            raise ExportError(f"the export does not reproduce eager inference: {problem} "
                              f"(sample batch {shape})")  # fmt: skip


def parity_batches(model: torch.nn.Module, size: int | None) -> list[torch.Tensor]:
    """Two sample batches around the model's input size, neither of the tracing shape."""
    s = max(int(size or 256), model.size_divisibility + 32)
    first = sample_images([(s, s * 4 // 3), (s - 17, s + 9)], seed=1)
    padded = torch.zeros((2, 3, s, s * 4 // 3))  # different sizes, padded by the caller
    for i, image in enumerate(first):
        padded[i, :, : image.shape[1], : image.shape[2]] = image
    return [padded, torch.stack(sample_images([(s + 23, s - 11)], seed=2))]


def build_export(
    model: torch.nn.Module, cat_ids: Sequence[int], fmt: str, metadata: Mapping[str, Any],
    example: torch.Tensor,
) -> tuple[bytes, Runner]:  # fmt: skip
    """Trace ``model`` (eval mode) into ``fmt`` with ``metadata``.

    Args:
        example: a batch ``(N, 3, H, W)`` 0-255 to trace with (mirrored to batch ``2N``, so
            that no size is 1).

    Returns:
        the file's bytes and a callable that runs the exported model on a batch.
    """
    graph = DetectionGraph(model, cat_ids, onnx_nms=fmt == "onnx")
    program = trace_graph(graph, torch.cat([example, example.flip(-1)]))
    if fmt == "onnx":
        log.info("translating to ONNX (opset %d)", OPSET)
        data = _onnx_bytes(program, metadata)
        return data, _onnx_runner(data)
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={"retina.json": json.dumps(metadata)})
    return buffer.getvalue(), program.module()


def export_checkpoint(
    checkpoint: str, fmt: str, out: str | Path, score_thresh: float | None = None
) -> dict[str, Any]:
    """Export ``checkpoint`` to ``out`` in ``fmt`` (``"onnx"`` | ``"torch_export"``).

    Nothing is written unless the exported model reproduces eager inference on the sample
    batches; the file (and a ``.pt2``'s ``<out>.json``) are written atomically.

    Returns:
        the metadata written.

    Raises:
        ConfigError: bad ``format``, ``out`` or ``score_thresh``; CheckpointError: an
            unusable checkpoint; ExportError: the parity check failed.
    """
    from retina.engine.inference import load_for_inference
    from retina.utils.io import write_bytes_atomic, write_json_atomic

    if fmt not in FORMATS:
        raise ConfigError("format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    if out.suffix != SUFFIXES[fmt]:
        raise ConfigError("out", f"{out}: format={fmt} writes a {SUFFIXES[fmt]} file")
    if out.is_dir():
        raise ConfigError("out", f"{out} is a folder")
    overrides = {}
    if score_thresh is not None:
        number = isinstance(score_thresh, (int, float)) and not isinstance(score_thresh, bool)
        if not number or not 0 <= score_thresh <= 1:
            raise ConfigError("score_thresh", f"must be null or in [0, 1], got {score_thresh!r}")
        overrides["score_thresh"] = float(score_thresh)
    model, state = load_for_inference(str(checkpoint), overrides)
    metadata = build_metadata(state, str(checkpoint), model)
    cat_ids = [int(c) for c in state["cat_ids"]]
    batches = parity_batches(model, metadata["min_size"])
    log.info("tracing %s with torch.export", checkpoint)
    data, run = build_export(model, cat_ids, fmt, metadata, batches[0])
    check_parity(model, run, cat_ids, batches)
    if fmt == "torch_export":  # the sidecar first: a .pt2 never stands without it
        write_json_atomic(f"{out}.json", metadata, indent=1)
    write_bytes_atomic(out, data)
    log.info("wrote %s", out)
    return metadata

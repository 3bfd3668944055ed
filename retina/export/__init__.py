"""Export of a trained RetinaNet to ONNX and ``torch.export`` with post-processing in the
graph (docs/deploy.md), and onnxruntime inference for ``retina-eval``/``retina-predict``.

``onnx``/``onnxruntime``/``onnxscript`` (the ``export`` extra) are imported only when an ONNX
model is written or read.
"""

from retina.export.exporter import FORMATS, export_checkpoint
from retina.export.graph import INPUT_NAME, OUTPUT_NAMES, DetectionGraph
from retina.export.runtime import OnnxDetector, load_detector

__all__ = [
    "FORMATS",
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "DetectionGraph",
    "OnnxDetector",
    "export_checkpoint",
    "load_detector",
]

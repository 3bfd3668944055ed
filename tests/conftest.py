"""Session set-up shared by every test.

Without a GPU, Triton kernels (:mod:`retina.ops.focal_triton`) are tested through Triton's
interpreter on CPU tensors. The interpreter must be chosen before Triton is first imported
(torchvision imports it), so it is chosen here, before any test module is collected.
CPU code never launches Triton kernels, so nothing else changes.

The model configs extend the ``retinanet_defaults`` node, registered here for every test
that composes a config (:mod:`retina.engine.defaults`).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from retina.engine.defaults import register_defaults  # noqa: E402

register_defaults()  # configs/model/*.yaml extend it; every test that composes needs it

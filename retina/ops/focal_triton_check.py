"""Check the Triton focal-loss kernels against the float64 reference on this device.

What the training step runs (:mod:`retina.ops.focal_triton` on (N, K) logits and integer
labels: the summed forward, the elementwise forward of OHEM, and the backward), plus the
dense-target kernels, each compared with :mod:`retina.ops.focal_reference` evaluated in
float64 on the same (rounded) logits. The reference runs on row chunks, so the check fits
beside the kernels at the full training step's shape.

Run by ``scripts/check_triton.py`` (default: the training step's shape) and, at a small
shape with the run's classes and dtypes, once at the start of every training run whose loss
runs the Triton kernels (:func:`retina.engine.build.build_training_run`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from retina.ops import focal_triton
from retina.ops.focal_backend import fused_module
from retina.ops.focal_reference import sigmoid_focal_loss_reference

# 16 images at 800x1333 padded to 896x1408, 9 anchors per place on P3-P7: the GPU training
# step of the paper's schedule (3,781,008 anchors).
TRAIN_STEP_ANCHORS = 16 * 9 * sum((896 // s) * (1408 // s) for s in (8, 16, 32, 64, 128))
# (rtol, atol) of the gradient, written in the logits' dtype; losses are float32 throughout.
GRAD_TOLERANCE = {
    torch.float32: (2e-5, 1e-6),
    torch.float16: (2e-3, 1e-6),
    torch.bfloat16: (1.6e-2, 1e-6),
}
LOSS_TOLERANCE = (2e-5, 1e-6)
SUM_RTOL = 1e-5


def make_inputs(rows: int, num_classes: int, dtype: torch.dtype, device: str | torch.device,
                seed: int = 0) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Logits ``(rows, K)`` in ``dtype`` (around the prior, with confident tails) and labels
    ``(rows,)``: about 5% foreground, 2% ignored (-2), the rest background (-1)."""
    g = torch.Generator(device=device).manual_seed(seed)
    x = 3 * torch.randn(rows, num_classes, generator=g, device=device) - 3
    kind = torch.rand(rows, generator=g, device=device)
    cls = torch.randint(0, num_classes, (rows,), generator=g, device=device)
    labels = torch.where(kind < 0.05, cls, torch.where(kind > 0.98, -2, -1))
    return x.to(dtype), labels


def check_triton(
    rows: int,
    num_classes: int,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cuda",
    alpha: float = 0.25,
    gamma: float = 2.0,
    chunk_rows: int = 1 << 16,
) -> list[str]:
    """Compare every Triton kernel with the float64 reference on ``rows`` x ``num_classes``
    logits; returns one line per mismatch (empty when everything agrees). ``device`` is a
    CUDA device, or CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``, tests)."""
    if not focal_triton.available():
        return ["Triton is not installed"]
    x, labels = make_inputs(rows, num_classes, dtype, device)
    where = f"{rows}x{num_classes} {str(dtype).removeprefix('torch.')}"
    problems = []
    if x.is_cuda and fused_module(x, "triton") is not focal_triton:
        problems.append(f"{where}: the 'triton' backend does not dispatch to the Triton kernels")
    one = torch.ones((), device=x.device)
    targets = torch.zeros(x.shape, dtype=dtype, device=x.device)
    pos = (labels >= 0).nonzero().squeeze(1)
    targets[pos, labels[pos]] = 1
    kept = (labels >= -1).to(torch.float64)[:, None]  # ignored rows: zero loss and gradient
    cases = (
        ("labels", labels, focal_triton.labels_forward, focal_triton.labels_backward, kept),
        ("dense", targets, focal_triton.dense_forward, focal_triton.dense_backward, None),
    )
    for name, other, forward, backward, keep in cases:
        total = forward(x, other, alpha, gamma, True)
        loss = forward(x, other, alpha, gamma, False)
        grad = backward(x, other, alpha, gamma, one)
        ref_total = torch.zeros((), dtype=torch.float64, device=x.device)
        bad = {"loss": [0, 0.0], "gradient": [0, 0.0]}
        for start in range(0, rows, chunk_rows):
            part = slice(start, start + chunk_rows)
            xr = x[part].double().requires_grad_()
            t = _onehot(other[part], num_classes) if name == "labels" else other[part].double()
            ref = sigmoid_focal_loss_reference(xr, t, alpha, gamma)
            ref = ref if keep is None else ref * keep[part]
            (ref_grad,) = torch.autograd.grad(ref.sum(), xr)
            ref_total += ref.detach().sum()
            _count(bad["loss"], loss[part], ref.detach(), LOSS_TOLERANCE)
            _count(bad["gradient"], grad[part], ref_grad, GRAD_TOLERANCE[dtype])
        for what, (count, worst) in bad.items():
            if count:
                problems.append(
                    f"{where} {name} {what}: {count} of {x.numel()} elements differ from the "
                    f"float64 reference (worst |difference| {worst:.3g})"
                )
        if not torch.isclose(total.double(), ref_total, rtol=SUM_RTOL, atol=0):
            problems.append(
                f"{where} {name} summed loss: {total.item():.9g}, reference {ref_total.item():.9g}"
            )
    return problems


def _onehot(labels: Tensor, num_classes: int) -> Tensor:
    t = torch.zeros(labels.shape[0], num_classes, dtype=torch.float64, device=labels.device)
    pos = labels >= 0
    t[pos, labels[pos]] = 1.0
    return t


def _count(tally: list, ours: Tensor, ref: Tensor, tolerance: tuple[float, float]) -> None:
    """Add the elements of ``ours`` outside ``tolerance`` of ``ref`` to ``tally`` =
    [count, worst absolute difference]; NaN counts as a mismatch."""
    ours = ours.double()
    rtol, atol = tolerance
    off = ~torch.isclose(ours, ref, rtol=rtol, atol=atol)
    if bool(off.any()):
        tally[0] += int(off.sum())
        diff = (ours - ref).abs()[off].nan_to_num(float("inf"))
        tally[1] = max(tally[1], float(diff.max()))

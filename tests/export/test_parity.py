"""first_difference names the output that differs, within the documented tolerances."""

from __future__ import annotations

import numpy as np
import torch

from retina.export.parity import first_difference, sample_images

CAT_IDS = [3, 7]


def eager_and_outputs():
    eager = [{
        "boxes": torch.tensor([[1.0, 2.0, 30.0, 40.0], [5.0, 5.0, 9.0, 9.0]]),
        "scores": torch.tensor([0.9, 0.4]),
        "labels": torch.tensor([1, 0]),
    }]  # fmt: skip
    boxes = np.zeros((1, 3, 4), np.float32)
    boxes[0, :2] = eager[0]["boxes"].numpy()
    scores = np.array([[0.9, 0.4, 0.0]], np.float32)
    labels = np.array([[7, 3, 0]], np.int64)
    return eager, [boxes, scores, labels, np.array([2], np.int64)]


def test_matching_outputs_within_tolerance():
    eager, out = eager_and_outputs()
    out[1][0, 0] += 5e-5  # < 1e-4
    out[0][0, 0, 2] += 0.09  # < 1e-3 of 100 px
    assert first_difference(eager, out, CAT_IDS, (100, 80)) is None


def test_each_output_is_named():
    cases = {
        "num_detections differs": lambda o: o[3].__setitem__(0, 1),
        "labels differ": lambda o: o[2].__setitem__((0, 1), 7),
        "scores differ": lambda o: o[1].__setitem__((0, 1), 0.41),
        "boxes differ": lambda o: o[0].__setitem__((0, 1, 3), 9.5),
        "not zero": lambda o: o[1].__setitem__((0, 2), 0.01),
    }
    for words, spoil in cases.items():
        eager, out = eager_and_outputs()
        spoil(out)
        problem = first_difference(eager, out, CAT_IDS, (100, 80))
        assert problem is not None and words in problem and "image 0" in problem, problem


def test_sample_images_are_deterministic_pixels():
    a, b = sample_images([(150, 170)]), sample_images([(150, 170)])
    assert torch.equal(a[0], b[0]) and a[0].shape == (3, 150, 170)
    assert a[0].min() >= 0 and a[0].max() <= 255 and torch.equal(a[0], a[0].round())

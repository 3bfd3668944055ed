"""Transforms keep boxes and labels consistent under resize, flip, crop and jitter."""

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import retina.data
from retina.data.transforms import build_transforms


def _boxes(draw, w, h, n):
    out = []
    for _ in range(n):
        x0 = draw(st.floats(0, w - 2))
        y0 = draw(st.floats(0, h - 2))
        x1 = draw(st.floats(x0 + 1.5, w))
        y1 = draw(st.floats(y0 + 1.5, h))
        out.append([x0, y0, x1, y1])
    return np.array(out, dtype=np.float32).reshape(-1, 4)


@st.composite
def samples(draw):
    w, h = draw(st.integers(16, 120)), draw(st.integers(16, 120))
    n = draw(st.integers(0, 6))
    boxes = _boxes(draw, w, h, n)
    labels = np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), np.int64)
    return w, h, boxes, labels


@settings(max_examples=40, deadline=None)
@given(samples(), st.sampled_from([0.0, 1.0]), st.integers(20, 80))
def test_flip_and_resize_map_boxes_exactly(sample, flip_prob, min_size):
    w, h, boxes, labels = sample
    transform = build_transforms(True, min_size, 200, flip_prob=flip_prob, seed=0)
    image = np.zeros((h, w, 3), np.uint8)
    out_img, out_boxes, out_labels, crowd = transform(image, boxes, labels, np.zeros((0, 4)))
    scale = min(min_size / min(h, w), 200 / max(h, w))
    nh, nw = out_img.shape[:2]
    assert (nh, nw) == (max(1, round(h * scale)), max(1, round(w * scale)))
    expected = boxes * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
    if flip_prob == 1.0:
        expected = expected[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [nw, 0, nw, 0]
    keep = ((expected[:, 2:] - expected[:, :2]) >= 1.0).all(axis=1)
    np.testing.assert_allclose(out_boxes, expected[keep], atol=1e-3)
    np.testing.assert_array_equal(out_labels, labels[keep])
    assert out_boxes.dtype == np.float32 and out_labels.dtype == np.int64
    assert crowd.shape == (0, 4)


@settings(max_examples=25, deadline=None)
@given(samples(), st.integers(0, 2**16))
def test_crop_jitter_photometric_keep_pairs(sample, seed):
    w, h, boxes, labels = sample
    crowd = np.array([[0, 0, w / 2, h / 2]], np.float32)
    transform = build_transforms(True, [24, 40], 90, photometric=True, scale_jitter=(0.5, 1.5),
                                 crop=(32, 32), seed=seed)
    img, out_boxes, out_labels, out_crowd = transform(np.full((h, w, 3), 99, np.uint8), boxes,
                                                      labels, crowd)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert len(out_boxes) == len(out_labels) <= len(boxes)
    assert set(out_labels.tolist()) <= set(labels.tolist())
    for b in (out_boxes, out_crowd):
        assert np.all(b[:, 2:] - b[:, :2] >= 1.0)
        assert np.all(b >= 0) and np.all(b[:, [0, 2]] <= 32) and np.all(b[:, [1, 3]] <= 32)


def test_eval_only_resizes_with_largest_size():
    transform = build_transforms(False, [100, 150], 400, photometric=True, crop=(8, 8))
    boxes = np.array([[0, 0, 50, 40]], np.float32)
    img, out, labels, _ = transform(np.zeros((100, 200, 3), np.uint8), boxes, np.array([3]),
                                    np.zeros((0, 4)))
    assert img.shape == (150, 300, 3)
    np.testing.assert_allclose(out, [[0, 0, 75, 60]])
    assert labels.tolist() == [3]


def test_seeded_pipelines_repeat_and_pickle():
    image = np.arange(40 * 30 * 3, dtype=np.uint8).reshape(30, 40, 3)
    boxes, labels = np.array([[1, 2, 20, 25]], np.float32), np.array([1])
    runs = []
    for _ in range(2):
        t = pickle.loads(pickle.dumps(build_transforms(True, [10, 20, 30], 60, seed=4)))
        runs.append([t(image, boxes, labels, np.zeros((0, 4)))[0].shape for _ in range(8)])
    assert runs[0] == runs[1] and len(set(runs[0])) > 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="scale_jitter"):
        build_transforms(True, 10, 20, scale_jitter=(2.0, 1.0))
    with pytest.raises(ValueError, match="min_size"):
        build_transforms(True, [], 20)


def test_heavy_libraries_are_imported_lazily():
    """No module of retina.data imports albumentations, OpenCV or pycocotools at top level."""
    heavy = {"albumentations", "cv2", "pycocotools"}
    for path in Path(retina.data.__file__).parent.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not {n.split(".")[0] for n in names} & heavy, path.name

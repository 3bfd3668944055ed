"""The synthetic shapes generator: determinism, COCO round trip, options, CLI."""

import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from retina.cli.make_shapes import main
from retina.data.shapes import SHAPE_NAMES, class_probabilities, make_shapes_dataset


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_arguments_give_identical_bytes(tmp_path):
    a = make_shapes_dataset(tmp_path / "a", train=6, val=2, size=96, seed=7, workers=1)
    b = make_shapes_dataset(tmp_path / "b", train=6, val=2, size=96, seed=7, workers=2)
    c = make_shapes_dataset(tmp_path / "c", train=6, val=2, size=96, seed=8, workers=1)
    assert _files(a) == _files(b)
    assert _files(a) != _files(c)


def test_layout_and_pycocotools_round_trip(shapes_root):
    for split, count in (("train", 10), ("val", 4)):
        ann = shapes_root / "annotations" / f"instances_{split}.json"
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(ann))
        assert len(coco.getImgIds()) == count
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPE_NAMES[:3])
        for img in coco.loadImgs(coco.getImgIds()):
            with Image.open(shapes_root / split / img["file_name"]) as handle:
                assert handle.size == (img["width"], img["height"]) == (96, 96)
                assert handle.mode == "RGB"
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            assert len(anns) >= 1
            for a in anns:
                x, y, w, h = a["bbox"]
                assert 0 <= x and 0 <= y and x + w <= 96 and y + h <= 96
                assert min(w, h) >= 12 and max(w, h) <= 48
                assert a["iscrowd"] == 0 and a["area"] == w * h


def test_objects_are_saturated_and_boxes_tight(tmp_path):
    root = make_shapes_dataset(tmp_path, train=4, val=0, size=128, seed=1, workers=1)
    data = json.loads((root / "annotations/instances_train.json").read_text())
    for ann in data["annotations"]:
        if ann["category_id"] != 2:  # squares fill their box exactly
            continue
        img = data["images"][ann["image_id"] - 1]
        pix = np.asarray(Image.open(root / "train" / img["file_name"]), dtype=np.int16)
        x, y, w, h = (int(v) for v in ann["bbox"])
        inside = pix[y + 1:y + h - 1, x + 1:x + w - 1]
        sat = inside.max(axis=2) - inside.min(axis=2)
        assert np.median(sat) > 100  # background and clutter are low-saturation


def test_long_tail_and_num_classes(tmp_path):
    probs = class_probabilities(5, long_tail=True)
    assert probs[0] / probs[-1] == pytest.approx(20.0)
    assert np.all(np.diff(probs) < 0)
    assert np.allclose(class_probabilities(4, long_tail=False), 0.25)
    root = make_shapes_dataset(tmp_path, train=30, val=0, size=96, seed=0, num_classes=5,
                               long_tail=True, workers=1)
    data = json.loads((root / "annotations/instances_train.json").read_text())
    counts = np.bincount([a["category_id"] for a in data["annotations"]], minlength=6)[1:]
    assert len(data["categories"]) == 5 and counts[0] > 3 * counts[-1]


def test_cli(tmp_path, capsys):
    assert main(["--out", str(tmp_path), "--train", "2", "--val", "1", "--size", "64"]) == 0
    assert (tmp_path / "annotations/instances_val.json").is_file()
    assert len(list((tmp_path / "train").glob("*.png"))) == 2
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path), "--num-classes", "99"])
    assert exc.value.code == 2
    assert "num_classes" in capsys.readouterr().err


def test_coco_like_options_bound_sizes_hide_colour_and_add_unannotated_shapes():
    import numpy as np

    from retina.data.shapes import class_probabilities, render_image

    probs = class_probabilities(5, False)
    sides, hues_by_class = [], {}
    for index in range(40):
        rng = np.random.default_rng([0, 1, index])
        image, objects = render_image(rng, 256, 5, probs, 16, max_object_side=64,
                                      class_colours=False, distractor_shapes=4)
        plain = render_image(np.random.default_rng([0, 1, index]), 256, 5, probs, 16,
                             max_object_side=64, class_colours=False)[1]
        assert objects == plain  # distractors are drawn after the objects, never annotated
        for label, (x, y, w, h) in objects:
            sides.append(max(w, h))
            cx, cy = int(x + w / 2), int(y + h / 2)
            if label == 1:  # squares: the centre pixel has the shape's colour
                hues_by_class.setdefault(label, set()).add(tuple(image[cy, cx] // 64))
    assert max(sides) <= 64
    assert len(hues_by_class[1]) > 3  # one class, many colours

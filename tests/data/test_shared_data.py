"""Real datasets in ``../shared/data`` beside the repository (skipped when absent): BCCD and
the raccoons through the VOC converter, COCO128 through the COCO path."""

from __future__ import annotations

from pathlib import Path

import pytest

from retina.data import CocoDetection, check_coco_dict, validate_coco
from retina.data.convert_voc import convert_voc

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _need(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


@pytest.mark.parametrize("split, images, boxes, zero", [("trainval", 292, 3943, 2),
                                                        ("test", 72, 945, 0)])
def test_bccd_converts_with_its_zero_area_boxes_as_warnings(split, images, boxes, zero):
    bccd = _need("bccd")
    data, report = convert_voc(bccd / "Annotations", bccd / "JPEGImages",
                               split_file=bccd / "ImageSets" / "Main" / f"{split}.txt")
    assert report.images == images and report.boxes == boxes
    assert list(report.boxes_per_class) == ["Platelets", "RBC", "WBC"]
    assert report.count("zero_area") == zero and report.count("size") == 0
    problems = check_coco_dict(data, split)
    assert len(problems) == zero and not any(p.is_error for p in problems)


def test_bccd_trains_as_it_is(tmp_path):
    import json

    bccd = _need("bccd")
    data, _ = convert_voc(bccd / "Annotations", bccd / "JPEGImages",
                          split_file=bccd / "ImageSets" / "Main" / "trainval.txt")
    ann = tmp_path / "train.json"
    ann.write_text(json.dumps(data))
    dataset = CocoDetection(ann, bccd / "JPEGImages", drop_empty=True)
    assert dataset.num_dropped_boxes == 2 and len(dataset) == 292
    image, target = dataset[0]
    assert tuple(image.shape) == (3, 480, 640) and len(target["boxes"]) > 0


def test_raccoons_flat_voc():
    raccoon = _need("raccoon-voc")
    data, report = convert_voc(raccoon / "annotations", raccoon / "images")
    assert report.images == 200 and report.boxes == 217
    assert not any(p.is_error for p in check_coco_dict(data))


def test_coco128_passes_check_data():
    coco = _need("coco128")
    problems = validate_coco(coco / "annotations" / "instances_train2017.json",
                             coco / "train2017")
    assert problems == []


def test_coco128_as_yolo_labels_maps_back_to_coco_ids(tmp_path):
    import json

    import numpy as np

    from retina.data.convert_yolo import COCO80_TO_91, COCO_NAMES, convert_yolo

    coco = _need("coco128")
    original = json.loads((coco / "annotations" / "instances_train2017.json").read_text())
    sizes = {i["id"]: (i["width"], i["height"], Path(i["file_name"]).stem)
             for i in original["images"]}
    index_of = {cat_id: index for index, cat_id in enumerate(COCO80_TO_91)}
    lines: dict[str, list[str]] = {}
    for ann in original["annotations"]:
        if ann["iscrowd"]:
            continue
        w, h, stem = sizes[ann["image_id"]]
        x, y, bw, bh = ann["bbox"]
        lines.setdefault(stem, []).append(
            f"{index_of[ann['category_id']]} {(x + bw / 2) / w:.8f} {(y + bh / 2) / h:.8f} "
            f"{bw / w:.8f} {bh / h:.8f}")
    for stem, rows in lines.items():
        (tmp_path / f"{stem}.txt").write_text("\n".join(rows) + "\n")
    data, report = convert_yolo(tmp_path, coco / "train2017", COCO_NAMES, coco_ids=True)
    assert report.images == 128 and report.count("no_labels") == 2
    by_name = {i["file_name"]: i["id"] for i in data["images"]}
    old_name = {i["id"]: i["file_name"] for i in original["images"]}

    def boxes(anns, image_id_of):
        return sorted((image_id_of(a["image_id"]), a["category_id"], *np.round(a["bbox"], 1))
                      for a in anns if not a.get("iscrowd"))

    expected = boxes(original["annotations"], lambda i: by_name[old_name[i]])
    got = boxes(data["annotations"], lambda i: i)
    assert len(got) == len(expected) == 929
    for a, b in zip(got, expected, strict=True):
        assert a[:2] == b[:2] and np.allclose(a[2:], b[2:], atol=0.11)

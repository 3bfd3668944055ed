"""retina-check-data: one broken fixture per problem, each with its expected message."""

import copy
import json

import pytest
from PIL import Image

from retina.data import CocoDetection, DataError, validate_coco
from retina.data.validate import main

GOOD = {
    "images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 24},
               {"id": 2, "file_name": "b.png", "width": 16, "height": 16}],
    "annotations": [
        {"id": 10, "image_id": 1, "category_id": 7, "bbox": [1, 2, 10, 8], "iscrowd": 0},
        {"id": 11, "image_id": 2, "category_id": 7, "bbox": [0, 0, 16, 16], "iscrowd": 1},
    ],
    "categories": [{"id": 7, "name": "thing"}],
}


@pytest.fixture
def root(tmp_path):
    Image.new("RGB", (32, 24)).save(tmp_path / "a.png")
    Image.new("RGB", (16, 16)).save(tmp_path / "b.png")
    return tmp_path


def _write(root, data, text=None):
    path = root / "ann.json"
    path.write_text(text if text is not None else json.dumps(data))
    return path


def _edit(fn):
    data = copy.deepcopy(GOOD)
    fn(data)
    return data


def test_clean_dataset_has_no_problems(root, capsys):
    ann = _write(root, GOOD)
    assert validate_coco(ann, root) == []
    assert main([str(ann), str(root)]) == 0
    assert "no problems" in capsys.readouterr().out


JSON_CASES = {
    "malformed": (None, "malformed JSON at line 1 column 2"),
    "not_object": ([1, 2], "top level must be a JSON object, got list"),
    "missing_key": (_edit(lambda d: d.pop("categories")), "missing top-level key 'categories'"),
    "image_missing_key": (_edit(lambda d: d["images"][1].pop("file_name")),
                          "image id 2: missing key(s) file_name"),
    "duplicate_image": (_edit(lambda d: d["images"].append(dict(d["images"][0]))),
                        "image id 1: duplicate image id"),
    "duplicate_annotation": (_edit(lambda d: d["annotations"].append(dict(d["annotations"][0]))),
                             "annotation id 10: duplicate annotation id"),
    "annotation_missing_key": (_edit(lambda d: d["annotations"][0].pop("bbox")),
                               "annotation id 10: missing key(s) bbox"),
    "unknown_image": (_edit(lambda d: d["annotations"][0].update(image_id=99)),
                      "annotation id 10 (image id 99): image id 99 does not exist"),
    "unknown_category": (_edit(lambda d: d["annotations"][1].update(category_id=3)),
                         "annotation id 11 (image id 2): category id 3 does not exist"),
    "nan_box": (_edit(lambda d: d["annotations"][0].update(bbox=[1, 2, float("nan"), 8])),
                "annotation id 10 (image id 1): bbox has non-finite values [1, 2, nan, 8]"),
    "inf_box": (_edit(lambda d: d["annotations"][0].update(bbox=[float("inf"), 2, 3, 8])),
                "annotation id 10 (image id 1): bbox has non-finite values [inf, 2, 3, 8]"),
    "zero_width": (_edit(lambda d: d["annotations"][0].update(bbox=[1, 2, 0, 8])),
                   "annotation id 10 (image id 1): bbox width/height must be > 0, got [1, 2, 0,"),
    "negative_height": (_edit(lambda d: d["annotations"][1].update(bbox=[1, 2, 3, -1])),
                        "annotation id 11 (image id 2): bbox width/height must be > 0"),
    "outside": (_edit(lambda d: d["annotations"][0].update(bbox=[25, 2, 10, 8])),
                "annotation id 10 (image id 1): bbox [25, 2, 10, 8] lies outside the 32x24 image"),
    "bad_bbox_type": (_edit(lambda d: d["annotations"][0].update(bbox="oops")),
                      "annotation id 10 (image id 1): bbox must be 4 numbers [x, y, w, h]"),
    "list_category": (_edit(lambda d: d["annotations"][1].update(category_id=[7])),
                      "annotation id 11 (image id 2): category id [7] does not exist"),
    "bad_size": (_edit(lambda d: d["images"][0].update(width=0)),
                 "image id 1: width/height must be positive integers, got 0x24"),
}


@pytest.mark.parametrize("case", sorted(JSON_CASES))
def test_json_problem_reported_and_refused(root, case, capsys):
    data, expected = JSON_CASES[case]
    ann = _write(root, data, text="{oops" if data is None else None)
    problems = validate_coco(ann, root)
    assert problems, case
    assert any(expected in p.message for p in problems), [p.message for p in problems]
    assert all("\n" not in p.message and str(ann) in p.message for p in problems)
    assert main([str(ann), str(root)]) == 1
    assert expected in capsys.readouterr().out
    with pytest.raises(DataError) as exc:  # training/evaluation refuse with the same message
        CocoDetection(ann, root)
    assert "\n" not in str(exc.value)
    assert problems[0].message in str(exc.value)


def test_missing_annotation_file(tmp_path):
    problems = validate_coco(tmp_path / "nope.json", tmp_path)
    assert len(problems) == 1 and "nope.json: annotation file not found" in problems[0].message


def test_missing_file(root):
    (root / "b.png").unlink()
    ann = _write(root, GOOD)
    [problem] = validate_coco(ann, root)
    assert problem.message == f"{root / 'b.png'} (image id 2): image file is missing"
    assert validate_coco(ann, root, check_images=False) == []


def test_corrupt_image(root):
    data = (root / "a.png").read_bytes()
    (root / "a.png").write_bytes(data[: len(data) // 2])
    (root / "b.png").write_bytes(b"garbage")
    messages = [p.message for p in validate_coco(_write(root, GOOD), root)]
    assert len(messages) == 2
    assert messages[0].startswith(f"{root / 'a.png'} (image id 1): unreadable or corrupt image")
    assert messages[1].startswith(f"{root / 'b.png'} (image id 2): unreadable or corrupt image")


def test_size_mismatch(root):
    Image.new("RGB", (30, 24)).save(root / "a.png")
    [problem] = validate_coco(_write(root, GOOD), root)
    assert problem.message == (f"{root / 'a.png'} (image id 1): image is 30x24 but the JSON says"
                               " 32x24")
    assert problem.image_id == 1


def test_every_problem_listed(root, capsys):
    data = _edit(lambda d: (d["annotations"][0].update(bbox=[1, 2, 0, 8]),
                            d["annotations"][1].update(category_id=5)))
    (root / "a.png").unlink()
    ann = _write(root, data)
    assert main([str(ann), str(root)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[-1] == "3 problem(s) found"
    with pytest.raises(DataError, match=r"and 1 more problems"):
        CocoDetection(ann, root)


def test_shapes_dataset_is_clean(shapes_root):
    for split in ("train", "val"):
        ann = shapes_root / "annotations" / f"instances_{split}.json"
        assert validate_coco(ann, shapes_root / split) == []


@pytest.mark.parametrize("case", sorted(c for c in JSON_CASES if JSON_CASES[c][0] is not None))
def test_fast_path_agrees_with_record_walk(case):
    from retina.data.columns import columns_are_valid, extract_columns

    good = extract_columns(copy.deepcopy(GOOD))
    assert good is not None and columns_are_valid(good)
    cols = extract_columns(JSON_CASES[case][0])
    assert cols is None or not columns_are_valid(cols)

"""retina-check-data: one broken fixture per problem, each with its expected message; errors
refuse the data, warnings are repaired by loading (and refused with --strict)."""

import copy
import json

import pytest
from PIL import Image

from retina.cli.check_data import main
from retina.data import CocoDetection, DataError, validate_coco

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
    "bad_bbox_type": (_edit(lambda d: d["annotations"][0].update(bbox="oops")),
                      "annotation id 10 (image id 1): bbox must be 4 numbers [x, y, w, h]"),
    "list_category": (_edit(lambda d: d["annotations"][1].update(category_id=[7])),
                      "annotation id 11 (image id 2): category id [7] does not exist"),
    "bad_size": (_edit(lambda d: d["images"][0].update(width=0)),
                 "image id 1: width/height must be positive integers, got 0x24"),
}
# What loading repairs: (data, message, boxes of image 1 after loading, dropped, clipped).
WARNING_CASES = {
    "zero_width": (_edit(lambda d: d["annotations"][0].update(bbox=[1, 2, 0, 8])),
                   "annotation id 10 (image id 1): bbox width/height must be > 0, got [1, 2, 0, 8]"
                   " (dropped when loading)", [], 1, 0),
    "negative_height": (_edit(lambda d: d["annotations"][1].update(bbox=[1, 2, 3, -1])),
                        "annotation id 11 (image id 2): bbox width/height must be > 0",
                        [[1, 2, 11, 10]], 1, 0),
    "outside": (_edit(lambda d: d["annotations"][0].update(bbox=[25, 2, 10, 8])),
                "annotation id 10 (image id 1): bbox [25, 2, 10, 8] lies outside the 32x24 image"
                " (clipped when loading)", [[25, 2, 32, 10]], 0, 1),
    "wholly_outside": (_edit(lambda d: d["annotations"][0].update(bbox=[40, 2, 10, 8])),
                       "lies outside the 32x24 image (dropped when loading: nothing of it is "
                       "inside)", [], 1, 0),
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


@pytest.mark.parametrize("case", sorted(WARNING_CASES))
def test_warning_repaired_by_loading_refused_by_strict(root, case, capsys, caplog):
    data, expected, boxes, dropped, clipped = WARNING_CASES[case]
    ann = _write(root, data)
    [problem] = validate_coco(ann, root)
    assert not problem.is_error and expected in problem.message
    assert main([str(ann), str(root)]) == 0
    out = capsys.readouterr().out
    assert f"warning: {ann}" in out and "0 error(s), 1 warning(s)" in out
    assert main([str(ann), str(root), "--strict"]) == 1
    dataset = CocoDetection(ann, root)
    assert (dataset.num_dropped_boxes, dataset.num_clipped_boxes) == (dropped, clipped)
    assert dataset.annotations(0)[0].tolist() + dataset.annotations(1)[0].tolist() == boxes
    assert len([r for r in caplog.records if r.name == "retina.data.coco"]) == 1
    with pytest.raises(DataError, match=r"ann\.json: 1 box\(es\) .*\(annotation ids 1[01]\) "
                                        r"\(data\.invalid_boxes=error"):
        CocoDetection(ann, root, invalid_boxes="error")


def test_invalid_box_warning_counts_and_names_the_first_ids(root, caplog):
    data = _edit(lambda d: d["annotations"].extend(
        {"id": 100 + i, "image_id": 1, "category_id": 7, "bbox": [1, 1, 0, 3]} for i in range(7)))
    dataset = CocoDetection(_write(root, data), root)
    assert dataset.num_dropped_boxes == 7
    [record] = [r.getMessage() for r in caplog.records if r.name == "retina.data.coco"]
    assert "dropped 7 box(es)" in record and "(annotation ids 100, 101, 102, 103, 104, ...)" \
        in record and "\n" not in record


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


def test_size_mismatch_from_exif_orientation_is_named(root):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 32x24, upright 24x32
    Image.new("RGB", (32, 24)).save(root / "a.png", exif=exif)
    [problem] = validate_coco(_write(root, GOOD), root)
    assert problem.is_error and problem.message.endswith(
        "image is 24x32 once turned upright by its EXIF orientation but the JSON says 32x24")


def test_boxes_drawn_on_the_stored_frame_of_an_exif_image_are_errors(root, capsys):
    """The JSON has the upright size, the box the stored frame's coordinates: it fits the
    stored 32x24 pixels but not the upright 24x32 image."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (32, 24)).save(root / "a.png", exif=exif)
    data = _edit(lambda d: (d["images"][0].update(width=24, height=32),
                            d["annotations"][0].update(bbox=[20, 2, 10, 8])))
    ann = _write(root, data)
    [problem] = validate_coco(ann, root)
    assert problem.is_error and problem.ann_id == 10 and problem.message == (
        f"{root / 'a.png'} (image id 1): annotation id 10: bbox [20, 2, 10, 8] lies outside the "
        "24x32 image (upright by its EXIF orientation 6) but inside its stored 32x24 pixels: "
        "drawn on the un-rotated image? Turn the boxes upright (retina-convert-data voc does) "
        "or remove the EXIF orientation")
    assert main([str(ann), str(root), "--strict"]) == 1
    assert "1 error(s), 0 warning(s)" in capsys.readouterr().out
    data["annotations"][0]["bbox"] = [20, 2, 20, 8]  # beyond both frames: the usual warning
    [problem] = validate_coco(_write(root, data), root)
    assert not problem.is_error and "lies outside the 24x32 image" in problem.message


def test_dataset_refuses_an_invalid_boxes_choice():
    with pytest.raises(DataError, match="invalid_boxes must be 'drop' or 'error'"):
        CocoDetection("unused.json", ".", invalid_boxes="clip")


def test_every_problem_listed(root, capsys):
    data = _edit(lambda d: (d["annotations"][0].update(bbox=[1, 2, 0, 8]),
                            d["annotations"][1].update(category_id=5)))
    (root / "a.png").unlink()
    ann = _write(root, data)
    assert main([str(ann), str(root)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[-1] == "2 error(s), 1 warning(s): the data cannot be used"
    assert [line.split(":")[0] for line in out[:3]] == ["error", "error", "warning"]
    with pytest.raises(DataError, match=r"category id 5 does not exist$"):
        CocoDetection(ann, root)


def test_shapes_dataset_is_clean(shapes_root):
    for split in ("train", "val"):
        ann = shapes_root / "annotations" / f"instances_{split}.json"
        assert validate_coco(ann, shapes_root / split) == []


FAST_PATH_CASES = {**{c: v[0] for c, v in JSON_CASES.items() if v[0] is not None},
                   **{c: v[0] for c, v in WARNING_CASES.items()}}


@pytest.mark.parametrize("case", sorted(FAST_PATH_CASES))
def test_fast_path_agrees_with_record_walk(case):
    from retina.data.columns import columns_are_valid, extract_columns

    good = extract_columns(copy.deepcopy(GOOD))
    assert good is not None and columns_are_valid(good)
    cols = extract_columns(FAST_PATH_CASES[case])
    assert cols is None or not columns_are_valid(cols)

"""retina.data.convert_voc and retina.data.convert_yolo (VOC and YOLO -> COCO) on trees the
tests write, one quirk at a time (one file: both formats' tests share its image writer)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from retina.data import CocoDetection, DataError, check_coco_dict
from retina.data.convert_voc import convert_voc
from retina.data.convert_yolo import COCO80_TO_91, COCO_NAMES, convert_yolo, load_yolo_names
from retina.data.images import read_image


def voc_xml(filename: str, objects: list[tuple], size: tuple[int, int] | None = (64, 48)
            ) -> str:
    """A VOC record; objects are ``(name, xmin, ymin, xmax, ymax[, difficult])``."""
    size_xml = "" if size is None else \
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
    objs = "".join(
        f"<object><name>{o[0]}</name><difficult>{o[5] if len(o) > 5 else 0}</difficult>"
        f"<bndbox><xmin>{o[1]}</xmin><ymin>{o[2]}</ymin><xmax>{o[3]}</xmax><ymax>{o[4]}</ymax>"
        "</bndbox></object>" for o in objects)
    return f"<annotation><filename>{filename}</filename>{size_xml}{objs}</annotation>"


def save_image(path: Path, size: tuple[int, int] = (64, 48), mode: str = "RGB",
               fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path, format=fmt)


@pytest.fixture
def voc(tmp_path) -> Path:
    """VOC's own layout: three images, one of them a PNG named .jpg, one RGBA."""
    root = tmp_path / "VOC"
    (root / "Annotations").mkdir(parents=True)
    save_image(root / "JPEGImages" / "a.jpg")
    save_image(root / "JPEGImages" / "b.jpg", fmt="PNG")  # a PNG named .jpg
    save_image(root / "JPEGImages" / "c.png", mode="RGBA")
    records = {
        "a": voc_xml("a.jpg", [("dog", 11, 21, 50, 40), ("cat", 1, 1, 64, 48)]),
        "b": voc_xml("b.jpg", [("dog", 5, 5, 10, 10, 1)]),
        "c": voc_xml("c.png", [("cat", 3, 4, 30, 20)]),
    }
    for stem, text in records.items():
        (root / "Annotations" / f"{stem}.xml").write_text(text)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("c\na\n")
    return root


def convert(root: Path, **kwargs):
    return convert_voc(root / "Annotations", root / "JPEGImages", **kwargs)


def test_voc_layout_boxes_classes_and_difficult(voc):
    data, report = convert(voc)
    assert [i["file_name"] for i in data["images"]] == ["a.jpg", "b.jpg", "c.png"]
    assert data["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    first = data["annotations"][0]
    assert first["bbox"] == [10.0, 20.0, 40.0, 20.0]  # 1-based inclusive corners
    assert first["category_id"] == 2 and first["image_id"] == 1
    assert data["annotations"][1]["bbox"] == [0.0, 0.0, 64.0, 48.0]  # the whole image
    assert [a["iscrowd"] for a in data["annotations"]] == [0, 0, 1, 0]
    assert report.images == 3 and report.boxes_per_class == {"cat": 2, "dog": 2}
    assert report.notes == {"difficult": ["b.xml object 0"]}
    assert check_coco_dict(data) == []
    kept, _ = convert(voc, keep_difficult=True)
    assert [a["iscrowd"] for a in kept["annotations"]] == [0, 0, 0, 0]


def test_voc_split_file_and_classes_order(voc):
    split = voc / "ImageSets" / "Main" / "train.txt"
    data, report = convert(voc, split_file=split, classes=["dog", "cat"])
    assert [i["file_name"] for i in data["images"]] == ["c.png", "a.jpg"]
    assert data["categories"] == [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}]
    assert [a["category_id"] for a in data["annotations"]] == [2, 1, 2]
    assert report.boxes_per_class == {"dog": 1, "cat": 2}


def test_voc_unknown_class_names_the_file(voc):
    with pytest.raises(DataError, match=r"a\.xml:1: object 1: unknown class 'cat' \(--classes: "
                                        r"dog\)"):
        convert(voc, classes=["dog"])


def test_voc_flat_layout(tmp_path):
    save_image(tmp_path / "x.jpg", size=(30, 20))
    (tmp_path / "x.xml").write_text(voc_xml("x.jpg", [("a", 1, 1, 10, 10)], size=(30, 20)))
    data, _ = convert_voc(tmp_path, tmp_path)
    assert data["images"] == [{"id": 1, "file_name": "x.jpg", "width": 30, "height": 20}]


@pytest.mark.parametrize("size", [None, (0, 0), (100, 100)])
def test_voc_size_from_the_image_header(voc, size):
    (voc / "Annotations" / "a.xml").write_text(voc_xml("a.jpg", [("dog", 1, 1, 5, 5)], size))
    data, report = convert(voc)
    assert (data["images"][0]["width"], data["images"][0]["height"]) == (64, 48)
    assert report.notes["size"] == ["a.xml"]
    assert any(line.startswith("1 image sizes taken from the image file") for line in
               report.lines())


def test_voc_zero_area_box_warned_and_dropped(voc, caplog):
    (voc / "Annotations" / "a.xml").write_text(
        voc_xml("a.jpg", [("dog", 20, 20, 20, 20), ("dog", 10, 10, 30, 70)]))
    data, report = convert(voc)
    assert data["annotations"][0]["bbox"] == [19.0, 19.0, 0.0, 0.0]
    assert report.notes["zero_area"] == ["a.xml object 0"]
    assert report.notes["outside"] == ["a.xml object 1"]
    problems = check_coco_dict(data, "ann.json")
    assert len(problems) == 2 and not any(p.is_error for p in problems)
    ann = voc / "ann.json"
    import json

    ann.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="retina.data.coco"):
        dataset = CocoDetection(ann, voc / "JPEGImages")
    assert dataset.num_dropped_boxes == 1 and dataset.num_clipped_boxes == 1
    [record] = [r for r in caplog.records if r.name == "retina.data.coco"]
    assert "dropped 1 box(es)" in record.getMessage() and "(annotation ids 1)" in \
        record.getMessage() and "clipped 1 box(es)" in record.getMessage()
    boxes, labels, _ = dataset.annotations(0)
    assert boxes.tolist() == [[9.0, 9.0, 30.0, 48.0]]  # clipped to the 64x48 image
    with pytest.raises(DataError, match=r"ann\.json: 1 box\(es\) of zero area .*ids 1\)"):
        CocoDetection(ann, voc / "JPEGImages", invalid_boxes="error")


def test_voc_png_named_jpg_and_rgba_read(voc):
    data, _ = convert(voc)
    for image in data["images"]:
        pixels = read_image(voc / "JPEGImages" / image["file_name"])
        assert pixels.shape == (image["height"], image["width"], 3)


@pytest.mark.parametrize("text, match", [
    ("<annotation><filename>a.jpg", r"a\.xml: malformed XML"),
    (voc_xml("a.jpg", [("dog", "x", 1, 5, 5)]), r"a\.xml:1: object 0 \(dog\): bndbox needs "
                                                r"a number <xmin>"),
    (voc_xml("a.jpg", [("", 1, 1, 5, 5)]), r"a\.xml:1: object 0 has no <name>"),
])
def test_voc_unusable_input_is_one_line(voc, text, match):
    (voc / "Annotations" / "a.xml").write_text(text)
    with pytest.raises(DataError, match=match) as info:
        convert(voc)
    assert "\n" not in str(info.value)


def test_voc_image_found_by_xml_name_or_filename(voc):
    (voc / "Annotations" / "a.xml").write_text(voc_xml("renamed.jpg", []))
    (voc / "Annotations" / "b.xml").write_text(voc_xml("b", []))  # no suffix in <filename>
    data, report = convert(voc)
    assert [i["file_name"] for i in data["images"]] == ["a.jpg", "b.jpg", "c.png"]
    assert report.notes == {"filename": ["a.xml names renamed.jpg"]}
    (voc / "Annotations" / "d.xml").write_text(voc_xml("zz.jpg", []))
    with pytest.raises(DataError, match=r"d\.xml: no image named d \(an image suffix\) in "
                                        r".*JPEGImages, nor <filename> 'zz\.jpg'$"):
        convert(voc)


def test_voc_split_file_names_a_missing_record(voc):
    split = voc / "ImageSets" / "Main" / "train.txt"
    split.write_text("a\nnope\n")
    with pytest.raises(DataError, match=r"train\.txt: lists nope"):
        convert(voc, split_file=split)


def test_voc_image_comes_from_the_xml_name_not_a_stale_filename(voc):
    """img_000.xml naming img_004.jpg: detectron2 and torchvision take the id's image."""
    (voc / "Annotations" / "a.xml").write_text(voc_xml("c.png", [("dog", 11, 21, 50, 40)]))
    split = voc / "ImageSets" / "Main" / "train.txt"
    split.write_text("a\n")
    data, report = convert(voc, split_file=split)
    assert [i["file_name"] for i in data["images"]] == ["a.jpg"]
    assert report.notes == {"filename": ["a.xml names c.png"]}
    assert any(line.startswith("1 images taken from the XML's name, whose <filename> names "
                               "another file: a.xml names c.png") for line in report.lines())


def test_voc_filename_is_the_fallback_and_absolute_paths_stay_inside(voc, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    save_image(elsewhere / "e.jpg", size=(20, 10))
    save_image(voc / "JPEGImages" / "e.jpg")
    (voc / "Annotations" / "d.xml").write_text(voc_xml(str(elsewhere / "e.jpg"), []))
    data, report = convert(voc)
    assert [i["file_name"] for i in data["images"]][-1] == "e.jpg"
    assert data["images"][-1]["width"] == 64  # JPEGImages/e.jpg, not the file outside
    assert report.notes == {"by_filename": ["d.xml -> e.jpg"], "difficult": ["b.xml object 0"]}
    (voc / "Annotations" / "d.xml").write_text(voc_xml("/nowhere/zz.jpg", []))
    with pytest.raises(DataError, match=r"d\.xml: no image named d .*'/nowhere/zz\.jpg'$"):
        convert(voc)
    for windows_or_up in ("../../elsewhere/e.jpg", "C:\\Users\\me\\e.jpg"):
        (voc / "Annotations" / "d.xml").write_text(voc_xml(windows_or_up, []))
        data, _ = convert(voc)
        assert data["images"][-1]["file_name"] == "e.jpg"


@pytest.mark.parametrize("root_tag", ['annotation xmlns="http://example.com/voc"',
                                      'v:annotation xmlns:v="http://example.com/voc"'])
def test_voc_namespaces_keep_the_objects(voc, root_tag):
    text = voc_xml("a.jpg", [("dog", 11, 21, 50, 40)])
    if root_tag.startswith("v:"):
        text = text.replace("<", "<v:").replace("<v:/", "</v:")
    text = text.replace("<annotation>", f"<{root_tag}>", 1).replace(
        "<v:annotation>", f"<{root_tag}>", 1)
    (voc / "Annotations" / "a.xml").write_text(text)
    data, _ = convert(voc)
    assert [a["bbox"] for a in data["annotations"] if a["image_id"] == 1] == [
        [10.0, 20.0, 40.0, 20.0]]


@pytest.mark.parametrize("text, crowd", [
    ("False", 0), ("no", 0), ("0.0", 0), ("", 0), (" OFF ", 0),
    ("True", 1), ("yes", 1), ("1.0", 1), ("1", 1),
])  # fmt: skip
def test_voc_difficult_booleans(voc, text, crowd):
    (voc / "Annotations" / "a.xml").write_text(voc_xml("a.jpg", [("dog", 1, 1, 5, 5, text)]))
    data, report = convert(voc)
    assert data["annotations"][0]["iscrowd"] == crowd
    assert ("a.xml object 0" in report.notes.get("difficult", [])) == bool(crowd)


@pytest.mark.parametrize("text", ["maybe", "2", "-1", "nan"])
def test_voc_unknown_difficult_is_an_error_at_its_line(voc, text):
    xml = voc_xml("a.jpg", [("dog", 1, 1, 5, 5, text)]).replace("<object>", "\n<object>\n")
    (voc / "Annotations" / "a.xml").write_text(xml)
    with pytest.raises(DataError, match=rf"a\.xml:3: object 0: <difficult> must be 0 or 1 "
                                        rf"\(or true/false, yes/no\), got '{text}'$"):
        convert(voc)


def save_exif_jpeg(path: Path, stored: tuple[int, int], orientation: int,
                   box: tuple[int, int, int, int]) -> None:
    """A grey JPEG of ``stored`` (width, height) pixels, the stored-frame ``box`` (x1, y1, x2,
    y2, exclusive) filled red, with EXIF ``orientation``."""
    pixels = np.full((stored[1], stored[0], 3), 128, dtype=np.uint8)
    pixels[box[1]:box[3], box[0]:box[2]] = (230, 20, 20)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, exif=exif, quality=95)


def red_inside(path: Path, bbox: list[float]) -> float:
    """Share of red pixels in the COCO ``bbox`` of the upright image at ``path``."""
    pixels = read_image(path).astype(int)
    x, y, w, h = (round(v) for v in bbox)
    region = pixels[y:y + h, x:x + w]
    return float(((region[..., 0] > 180) & (region[..., 1] < 80)).mean())


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_voc_exif_rotated_image_with_stored_frame_size_turns_its_boxes(tmp_path, orientation):
    """A phone JPEG (stored 64x48, EXIF turns it to 48x64) annotated on its stored pixels."""
    save_exif_jpeg(tmp_path / "img" / "p.jpg", (64, 48), orientation, (40, 6, 60, 18))
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "p.xml").write_text(voc_xml("p.jpg", [("dog", 41, 7, 60, 18)], (64, 48)))
    data, report = convert_voc(tmp_path / "ann", tmp_path / "img")
    image, [ann] = data["images"][0], data["annotations"]
    assert (image["width"], image["height"]) == (48, 64)
    assert red_inside(tmp_path / "img" / "p.jpg", ann["bbox"]) > 0.9
    assert report.notes == {"rotated": [f"p.xml (orientation {orientation})"]}
    assert any(line.startswith("1 images with an EXIF orientation whose <size> and boxes are in "
                               "the stored frame: boxes turned upright") for line in report.lines())
    assert check_coco_dict(data) == []


def test_voc_exif_image_annotated_upright_is_kept_and_unknown_frames_refused(tmp_path):
    save_exif_jpeg(tmp_path / "img" / "p.jpg", (64, 48), 6, (40, 6, 60, 18))
    (tmp_path / "ann").mkdir()
    xml = tmp_path / "ann" / "p.xml"
    xml.write_text(voc_xml("p.jpg", [("dog", 31, 41, 42, 60)], (48, 64)))  # upright frame
    data, report = convert_voc(tmp_path / "ann", tmp_path / "img")
    assert data["annotations"][0]["bbox"] == [30.0, 40.0, 12.0, 20.0] and report.notes == {}
    assert red_inside(tmp_path / "img" / "p.jpg", [30, 40, 12, 20]) > 0.9
    for size in (None, (100, 100)):
        xml.write_text(voc_xml("p.jpg", [("dog", 1, 1, 5, 5)], size))
        with pytest.raises(DataError, match=r"p\.xml: p\.jpg has EXIF orientation 6 \(stored "
                                            r"64x48, shown upright 48x64\) and <size> .* cannot "
                                            r"tell .*--exif-frame stored"):
            convert_voc(tmp_path / "ann", tmp_path / "img")
    save_exif_jpeg(tmp_path / "img" / "p.jpg", (64, 48), 3, (40, 6, 60, 18))  # 180 degrees
    xml.write_text(voc_xml("p.jpg", [("dog", 41, 7, 60, 18)], (64, 48)))
    with pytest.raises(DataError, match=r"EXIF orientation 3 .* cannot tell"):
        convert_voc(tmp_path / "ann", tmp_path / "img")
    data, report = convert_voc(tmp_path / "ann", tmp_path / "img", exif_frame="stored")
    assert red_inside(tmp_path / "img" / "p.jpg", data["annotations"][0]["bbox"]) > 0.9
    assert report.count("rotated") == 1
    data, report = convert_voc(tmp_path / "ann", tmp_path / "img", exif_frame="upright")
    assert data["annotations"][0]["bbox"] == [40.0, 6.0, 20.0, 12.0] and report.notes == {}


# ----------------------------------------------------------------------------------- YOLO
@pytest.fixture
def yolo(tmp_path) -> Path:
    root = tmp_path / "yolo"
    save_image(root / "images" / "a.jpg", size=(100, 50))
    save_image(root / "images" / "b.jpg", size=(40, 40), fmt="PNG")  # a PNG named .jpg
    save_image(root / "images" / "c.png", size=(40, 40), mode="RGBA")  # no label file
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n\n1 0.1 0.1 0.2 0.2\n")
    (root / "labels" / "b.txt").write_text("1 0.5 0.5 1.0 1.0\n1 0.5 0.5 1.0 1.0\n")
    (root / "labels" / "stray.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"names": ["car", "person"]}))
    return root


def yolo_convert(root: Path, names=("car", "person"), **kwargs):
    return convert_yolo(root / "labels", root / "images", list(names), **kwargs)


def test_yolo_boxes_and_quirks(yolo):
    data, report = yolo_convert(yolo)
    assert [i["file_name"] for i in data["images"]] == ["a.jpg", "b.jpg", "c.png"]
    assert [i["width"] for i in data["images"]] == [100, 40, 40]
    assert [a["bbox"] for a in data["annotations"]] == [
        [40.0, 15.0, 20.0, 20.0], [0.0, 0.0, 20.0, 10.0], [0.0, 0.0, 40.0, 40.0]]
    assert data["categories"] == [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}]
    assert report.boxes_per_class == {"car": 1, "person": 2}
    assert report.notes == {"no_labels": ["c.png"], "stray": ["stray.txt"],
                            "duplicate": ["b.txt:2"]}
    assert check_coco_dict(data) == []


@pytest.mark.parametrize("line, match", [
    ("2 0.5 0.5 0.1 0.1", r"a\.txt:1: class index 2 out of range"),
    ("0 0.5 0.5 0.1", r"a\.txt:1: expected 'class cx cy w h'"),
    ("car 0.5 0.5 0.1 0.1", r"a\.txt:1: expected 'class cx cy w h'"),
    ("0 nan 0.5 0.1 0.1", r"a\.txt:1: non-finite"),
    ("0 50 20 10 10", r"a\.txt:1: cx cy w h must be normalised"),
])
def test_yolo_bad_line_names_file_and_line(yolo, line, match):
    (yolo / "labels" / "a.txt").write_text(line + "\n")
    with pytest.raises(DataError, match=match) as info:
        yolo_convert(yolo)
    assert "\n" not in str(info.value)


def test_yolo_zero_area_and_outside_reported(yolo):
    (yolo / "labels" / "a.txt").write_text("0 0.5 0.5 0 0.2\n0 0.95 0.5 0.2 0.2\n")
    data, report = yolo_convert(yolo)
    assert report.notes["zero_area"] == ["a.txt:1"] and report.notes["outside"] == ["a.txt:2"]
    assert sorted(p.is_error for p in check_coco_dict(data)) == [False, False]


def test_yolo_names_files(tmp_path):
    listed = tmp_path / "d.yaml"
    listed.write_text("names:\n  0: car\n  1: person\n")
    assert load_yolo_names(listed) == ["car", "person"]
    text = tmp_path / "names.txt"
    text.write_text("car\nperson\n\n")
    assert load_yolo_names(text) == ["car", "person"]
    listed.write_text("names:\n  0: car\n  2: person\n")
    with pytest.raises(DataError, match=r"d\.yaml: names must map the indices 0\.\.1"):
        load_yolo_names(listed)
    text.write_text("car\n\nperson\n")
    with pytest.raises(DataError, match=r"names\.txt:2: empty class name"):
        load_yolo_names(text)


def test_yolo_coco_ids(yolo):
    (yolo / "labels" / "a.txt").write_text("79 0.5 0.5 0.2 0.2\n11 0.5 0.5 0.2 0.2\n")
    (yolo / "labels" / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    data, report = yolo_convert(yolo, names=COCO_NAMES, coco_ids=True)
    assert [a["category_id"] for a in data["annotations"]] == [90, 13, 1]
    assert data["categories"][-1] == {"id": 90, "name": "toothbrush"}
    assert len(set(COCO80_TO_91)) == len(COCO_NAMES) == 80
    assert report.boxes_per_class["stop sign"] == 1
    with pytest.raises(DataError, match="--coco-ids needs the 80 COCO classes"):
        yolo_convert(yolo, coco_ids=True)


def test_yolo_repeated_names_refused(yolo, tmp_path):
    """names: [cat, cat] once wrote two categories of one name and reported one."""
    listed = tmp_path / "d.yaml"
    listed.write_text("names: [cat, dog, cat]\n")
    with pytest.raises(DataError, match=r"d\.yaml: class name 'cat' is used by indices 0 and 2; "
                                        r"names must be distinct$"):
        load_yolo_names(listed)
    (tmp_path / "n.txt").write_text("cat\n cat \n")
    with pytest.raises(DataError, match=r"n\.txt: class name 'cat' is used by indices 0 and 1"):
        load_yolo_names(tmp_path / "n.txt")
    with pytest.raises(DataError, match=r"class name 'car' is used by indices 0 and 1"):
        yolo_convert(yolo, names=["car", "car"])


def test_yolo_names_with_a_byte_order_mark(tmp_path):
    for name, text in (("n.txt", "cat\ndog\n"), ("d.yaml", "names: [cat, dog]\n")):
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
        assert load_yolo_names(tmp_path / name) == ["cat", "dog"]


def test_yolo_label_file_with_a_byte_order_mark(yolo):
    (yolo / "labels" / "a.txt").write_bytes(b"\xef\xbb\xbf0 0.5 0.5 0.2 0.4\n")
    data, _ = yolo_convert(yolo)
    assert data["annotations"][0]["bbox"] == [40.0, 15.0, 20.0, 20.0]


@pytest.mark.parametrize("text, expected", [
    ("names: {0: cat, '1': dog}\n", ["cat", "dog"]),
    ("names: {'1': dog, '0': cat}\n", ["cat", "dog"]),
    ("names: {0: cat, 'x': dog}\n", r"d\.yaml: names key 'x' is not an index"),
    ("names: {0: cat, '0': dog}\n", r"d\.yaml: names key '0' repeats an index"),
    ("names: {0: cat, 2: dog}\n", r"d\.yaml: names must map the indices 0\.\.1, got keys \[0, 2\]"),
    ("names: [cat, no]\n", r"d\.yaml: names\[1\] must be a name, got False \(YAML reads yes/no"),
    ("names: [cat, [dog]]\n", r"d\.yaml: names\[1\] must be a name, got \['dog'\]$"),
    ("nc: 2\nnames: [cat, dog]\n", ["cat", "dog"]),
    ("nc: 3\nnames: [cat, dog]\n", r"d\.yaml: nc: 3 but names lists 2 classes$"),
])  # fmt: skip
def test_yolo_names_mappings_and_bad_values(tmp_path, text, expected):
    path = tmp_path / "d.yaml"
    path.write_text(text)
    if isinstance(expected, list):
        assert load_yolo_names(path) == expected
        return
    with pytest.raises(DataError, match=expected) as info:
        load_yolo_names(path)
    assert "\n" not in str(info.value)


DARKNET_SPELLINGS = {"motorcycle": "motorbike", "airplane": "aeroplane", "couch": "sofa",
                     "potted plant": "pottedplant", "dining table": "diningtable",
                     "tv": "tvmonitor"}


def test_yolo_coco_ids_check_the_names_against_cocos(yolo):
    darknet = [DARKNET_SPELLINGS.get(n, n) for n in COCO_NAMES]
    data, _ = yolo_convert(yolo, names=darknet, coco_ids=True)
    assert [c["name"] for c in data["categories"]] == list(COCO_NAMES)
    swapped = list(COCO_NAMES)
    swapped[15], swapped[16] = swapped[16], swapped[15]
    with pytest.raises(DataError, match=r"--coco-ids needs COCO's classes in COCO's order: the "
                                        r"names list has 'dog' at index 15, where COCO has "
                                        r"'cat'$"):
        yolo_convert(yolo, names=swapped, coco_ids=True)
    with pytest.raises(DataError, match=r"has 'n0' at index 0, where COCO has 'person'"):
        yolo_convert(yolo, names=[f"n{i}" for i in range(80)], coco_ids=True)


def test_voc_box_beyond_any_image_is_an_error(voc):
    """1e308 is finite, but its area is not: the JSON would hold Infinity."""
    (voc / "Annotations" / "a.xml").write_text(voc_xml("a.jpg", [("dog", 1, 1, "1e308", 5)]))
    with pytest.raises(DataError, match=r"a\.xml object 0: box \[x, y, w, h\] = \[0\.0, 0\.0, "
                                        r"1e\+308, 5\.0\] is beyond any image$"):
        convert(voc)


def test_yolo_label_file_that_is_not_a_file_is_an_error(yolo):
    """A FIFO (or a folder) named like a label file is not 'an image without labels'."""
    os.mkfifo(yolo / "labels" / "c.txt")
    with pytest.raises(DataError, match=r"c\.txt: label file is a named pipe \(FIFO\), not a "
                                        r"regular file$"):
        yolo_convert(yolo)


def test_upper_case_suffixes_are_not_skipped(voc, yolo):
    """a.XML and b.TXT (Windows tools) were silently left out: a record lost, an image
    written without its boxes."""
    (voc / "Annotations" / "c.xml").rename(voc / "Annotations" / "c.XML")
    data, _ = convert(voc)
    assert [i["file_name"] for i in data["images"]] == ["a.jpg", "b.jpg", "c.png"]
    (yolo / "labels" / "a.txt").rename(yolo / "labels" / "a.TXT")
    data, report = yolo_convert(yolo)
    assert [a["image_id"] for a in data["annotations"]] == [1, 1, 2]
    assert report.notes["no_labels"] == ["c.png"]
    (yolo / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    with pytest.raises(DataError, match=r"labels: a\.TXT and a\.txt both label a\.jpg$"):
        yolo_convert(yolo)


def test_symlink_loop_in_the_image_folder_is_no_traceback(voc):
    (voc / "JPEGImages" / "x.jpg").symlink_to("y.jpg")
    (voc / "JPEGImages" / "y.jpg").symlink_to("x.jpg")
    data, _ = convert(voc)
    assert [i["file_name"] for i in data["images"]] == ["a.jpg", "b.jpg", "c.png"]

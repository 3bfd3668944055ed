"""CocoDetection: items, label mapping, crowd, empty images, broken images, no image I/O."""

import json
import logging
import traceback

import numpy as np
import pytest
import torch

from retina.data import CocoDetection, DataError, detections_to_coco_results


def _write(tmp_path, images, annotations, categories):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": categories}))
    return ann


def _image(tmp_path, name, w, h, colour=(10, 200, 30)):
    from PIL import Image

    Image.new("RGB", (w, h), colour).save(tmp_path / name)


@pytest.fixture
def small(tmp_path):
    """Three images (one without boxes, one with only a crowd box); sparse category ids."""
    cats = [{"id": 90, "name": "zebra"}, {"id": 3, "name": "car"}, {"id": 17, "name": "cat"}]
    images = [{"id": 5, "file_name": "a.png", "width": 40, "height": 30},
              {"id": 2, "file_name": "b.png", "width": 20, "height": 50},
              {"id": 9, "file_name": "c.png", "width": 20, "height": 20}]
    anns = [
        {"id": 1, "image_id": 5, "category_id": 90, "bbox": [1, 2, 10, 5], "iscrowd": 0},
        {"id": 2, "image_id": 5, "category_id": 3, "bbox": [0, 0, 40, 30], "iscrowd": 1},
        {"id": 3, "image_id": 2, "category_id": 17, "bbox": [2, 3, 4, 5], "iscrowd": 1},
        {"id": 4, "image_id": 5, "category_id": 17, "bbox": [30, 20, 10.5, 10], "iscrowd": 0},
    ]
    for img in images:
        _image(tmp_path, img["file_name"], img["width"], img["height"])
    return _write(tmp_path, images, anns, cats), tmp_path


def test_item_contract_and_mapping(small):
    ann, root = small
    ds = CocoDetection(ann, root)
    assert ds.cat_ids == [3, 17, 90] and ds.class_names == ["car", "cat", "zebra"]
    assert ds.num_classes == 3 and len(ds) == 3 and ds.image_ids == [5, 2, 9]
    image, target = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 30, 40)
    assert target["image_id"] == 5 and target["orig_size"] == (30, 40)
    # the second box exceeds the image by half a pixel (tolerated) and is clipped to it
    torch.testing.assert_close(target["boxes"], torch.tensor([[1.0, 2, 11, 7], [30, 20, 40, 30]]))
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["labels"].tolist() == [2, 1]
    torch.testing.assert_close(target["crowd_boxes"], torch.tensor([[0.0, 0, 40, 30]]))
    _, t2 = ds[1]
    assert t2["boxes"].shape == (0, 4) and t2["labels"].shape == (0,)
    assert t2["crowd_boxes"].shape == (1, 4)
    assert ds.label_mapping() == {"cat_ids": [3, 17, 90], "class_names": ["car", "cat", "zebra"]}
    assert np.allclose(ds.aspect_ratios(), [40 / 30, 20 / 50, 1.0])


def test_label_round_trip(small):
    ds = CocoDetection(small[0], small[1])
    labels = torch.tensor([0, 2, 1, 1])
    cats = ds.label_to_cat_id(labels)
    assert cats.tolist() == [3, 90, 17, 17]
    assert torch.equal(ds.cat_id_to_label(cats), labels)
    assert ds.label_to_cat_id([2]).tolist() == [90]
    assert ds.cat_id_to_label(np.array([17])).tolist() == [1]
    with pytest.raises(DataError, match="unknown category"):
        ds.cat_id_to_label([4])


def test_drop_empty_keeps_only_images_with_boxes(small):
    ds = CocoDetection(small[0], small[1], drop_empty=True)
    assert ds.image_ids == [5]


def test_construction_never_opens_images(small, monkeypatch):
    from PIL import Image

    def fail(*args, **kwargs):
        raise AssertionError("an image was opened")

    monkeypatch.setattr(Image, "open", fail)
    ds = CocoDetection(small[0], small[1] / "missing-dir")
    assert len(ds) == 3


def test_bad_json_refused_with_validator_message(tmp_path):
    ann = _write(tmp_path, [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
                 [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, float("nan"), 4]}],
                 [{"id": 1, "name": "x"}])
    with pytest.raises(DataError) as exc:
        CocoDetection(ann, tmp_path)
    assert "annotation id 7 (image id 1): bbox has non-finite values" in str(exc.value)
    assert "\n" not in str(exc.value)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="malformed JSON"):
        CocoDetection(tmp_path / "bad.json", tmp_path)


def test_broken_images_skipped_logged_counted(small, caplog):
    ann, root = small
    (root / "b.png").write_bytes(b"not a png")
    ds = CocoDetection(ann, root, max_broken_fraction=0.5)
    with caplog.at_level(logging.WARNING, logger="retina.data.coco"):
        _, target = ds[1]
    assert target["image_id"] == 9  # the next valid image stands in
    assert ds.num_broken == 1 and "b.png (image id 2)" in caplog.text
    ds[1]  # known broken: skipped without counting again
    assert ds.num_broken == 1
    skipping = CocoDetection(ann, root, on_broken="skip", max_broken_fraction=0.5)
    assert skipping[1] is None


def test_too_many_broken_images_stop_the_run(small):
    ann, root = small
    (root / "a.png").write_bytes(b"")
    _image(root, "c.png", 21, 20)  # size differs from the JSON
    ds = CocoDetection(ann, root, max_broken_fraction=0.4)
    assert ds[0][1]["image_id"] == 2
    with pytest.raises(DataError, match=r"2 of 3 images are broken.*c.png \(image id 9\)"):
        ds[2]


def test_transforms_are_applied_on_numpy(small):
    def halve(image, boxes, labels, crowd):
        return image[::2, ::2], boxes / 2, labels, crowd / 2

    ds = CocoDetection(small[0], small[1], transforms=halve)
    image, target = ds[0]
    assert image.shape == (3, 15, 20) and target["orig_size"] == (30, 40)
    torch.testing.assert_close(target["boxes"][0], torch.tensor([0.5, 1, 5.5, 3.5]))


def test_detections_to_coco_maps_labels_back(small):
    ds = CocoDetection(small[0], small[1])
    det = {"image_id": 5, "boxes": torch.tensor([[1.0, 2, 11, 7]]),
           "scores": torch.tensor([0.5]), "labels": torch.tensor([2])}
    res = detections_to_coco_results([det], ds.cat_ids)
    assert res == [{"image_id": 5, "category_id": 90, "bbox": [1.0, 2.0, 10.0, 5.0],
                    "score": 0.5}]


def test_coco_property_and_shapes(shapes_root):
    ds = CocoDetection(shapes_root / "annotations/instances_train.json", shapes_root / "train")
    assert sorted(ds.coco.getImgIds()) == sorted(ds.image_ids)
    total = sum(len(ds[i][1]["boxes"]) for i in range(len(ds)))
    assert total == len(ds.coco.getAnnIds())


def test_seeded_loader_with_workers_repeats(shapes_root):
    """The training loader (retina.engine.loader) with 2 workers: the same seed gives the
    same images with the same multi-scale augmentations."""
    from retina.data import build_transforms, collate_detection
    from retina.engine.loader import ResumableLoader

    transforms = build_transforms(True, [64, 80, 96], 128, scale_jitter=(0.8, 1.2))
    ds = CocoDetection(shapes_root / "annotations/instances_train.json", shapes_root / "train",
                       transforms=transforms)

    def run():
        loader = iter(ResumableLoader(ds, batch_size=2, seed=11, num_workers=2,
                                      collate_fn=collate_detection))
        batches = [next(loader) for _ in range(len(ds) // 2)]
        return [(t["image_id"], tuple(im.shape), t["boxes"].sum().item())
                for images, targets in batches for im, t in zip(images, targets, strict=True)]

    first = run()
    assert run() == first and len({i for i, _, _ in first}) == 2 * (len(ds) // 2)
    assert len({shape for _, shape, _ in first}) > 1  # multi-scale draws differ per image


def test_data_error_stays_one_line_through_workers(small):
    from torch.utils.data import DataLoader

    from retina.data import collate_detection

    ann, root = small
    for name in ("a.png", "b.png", "c.png"):
        (root / name).write_bytes(b"broken")
    ds = CocoDetection(ann, root, max_broken_fraction=0.1)
    loader = DataLoader(ds, batch_size=1, num_workers=1, collate_fn=collate_detection)
    with pytest.raises(DataError) as exc:
        list(loader)
    # The traceback's frames hold the loader's iterator in a reference cycle; left to the
    # garbage collector, its worker shutdown waits out a 5 s timeout. Freed now, it is prompt.
    traceback.clear_frames(exc.value.__traceback__)
    message = str(exc.value)
    assert "\n" not in message and message.startswith("1 of 3 images are broken")
    assert "a.png (image id 5)" in message

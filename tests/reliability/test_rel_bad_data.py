"""Bad data end to end: every problem ``retina-check-data`` knows, put into a real dataset and
run through ``retina-check-data``, ``retina-train`` and ``retina-eval``: exit status, a
one-line message naming the file, no traceback, no output file half-written."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from relhelp import CliServer, checkpoint_files, load_raw, temp_files, train_args


def _edit_json(fn: Callable[[dict], None]) -> Callable[[Path], str]:
    def mutate(ann: Path) -> str:
        data = json.loads(ann.read_text())
        fn(data)
        ann.write_text(json.dumps(data))  # allow_nan: NaN/Infinity tokens, as Python writes
        return str(ann)

    return mutate


def _text(text: str) -> Callable[[Path], str]:
    def mutate(ann: Path) -> str:
        ann.write_text(text if text else ann.read_text()[:-37])
        return str(ann)

    return mutate


def _image(fn: Callable[[Path], None]) -> Callable[[Path], str]:
    """Damage the first image of the split (``ann`` is the split's annotation file)."""

    def mutate(ann: Path) -> str:
        data = json.loads(ann.read_text())
        split = ann.stem.removeprefix("instances_")
        path = ann.parent.parent / split / data["images"][0]["file_name"]
        fn(path)
        return str(path)

    return mutate


def _ann(i: int, **changes) -> Callable[[dict], None]:
    return lambda d: d["annotations"][i].update(changes)


def _resave(size: tuple[int, int]) -> Callable[[Path], None]:
    def fn(path: Path) -> None:
        with Image.open(path) as img:
            img.convert("RGB").resize(size).save(path)

    return fn


# name -> (mutation of the split's annotation file or images returning the file that the
# message must name, text of retina-check-data's message)
CASES: dict[str, tuple[Callable[[Path], str], str]] = {
    "malformed_json": (_text(""), "malformed JSON"),
    "not_an_object": (_text("[1, 2, 3]"), "top level must be a JSON object"),
    "missing_top_level_key": (
        _edit_json(lambda d: d.pop("annotations")),
        "missing top-level key 'annotations'",
    ),
    "images_not_a_list": (_edit_json(lambda d: d.update(images=None)), "'images' must be a list"),
    "image_missing_key": (
        _edit_json(lambda d: d["images"][0].pop("file_name")),
        "missing key(s) file_name",
    ),
    "image_bad_size": (
        _edit_json(lambda d: d["images"][0].update(width=-64)),
        "width/height must be positive integers",
    ),
    "duplicate_image_id": (
        _edit_json(lambda d: d["images"].append(dict(d["images"][0]))),
        "duplicate image id",
    ),
    "duplicate_category_id": (
        _edit_json(lambda d: d["categories"].append(dict(d["categories"][0]))),
        "duplicate category id",
    ),
    "annotation_missing_key": (
        _edit_json(lambda d: d["annotations"][0].pop("bbox")),
        "missing key(s) bbox",
    ),
    "duplicate_annotation_id": (
        _edit_json(lambda d: d["annotations"].append(dict(d["annotations"][0]))),
        "duplicate annotation id",
    ),
    "unknown_image": (_edit_json(_ann(0, image_id=424242)), "image id 424242 does not exist"),
    "unknown_category": (_edit_json(_ann(0, category_id=99)), "category id 99 does not exist"),
    "nan_box": (_edit_json(_ann(0, bbox=[1.0, 2.0, float("nan"), 8.0])), "non-finite"),
    "inf_box": (_edit_json(_ann(0, bbox=[float("inf"), 2.0, 3.0, 8.0])), "non-finite"),
    "bbox_not_numbers": (_edit_json(_ann(0, bbox="0 0 1 1")), "bbox must be 4 numbers"),
    "bad_iscrowd": (_edit_json(_ann(0, iscrowd=7)), "iscrowd must be 0 or 1"),
    "missing_image_file": (_image(lambda p: p.unlink()), "image file is missing"),
    "corrupt_image_file": (
        _image(lambda p: p.write_bytes(p.read_bytes()[:200])),
        "unreadable or corrupt image",
    ),
    "garbage_image_file": (_image(lambda p: p.write_bytes(b"GIF89a" * 50)), "unreadable"),
    "image_size_mismatch": (_image(_resave((48, 64))), "image is 48x64 but the JSON says"),
}
# What loading repairs (data.invalid_boxes=drop): check-data warns and exits 0 (1 with
# --strict); training drops or clips the boxes.
WARNING_CASES = {
    "zero_width_box": (_edit_json(_ann(0, bbox=[1.0, 2.0, 0.0, 8.0])), "must be > 0"),
    "negative_height_box": (_edit_json(_ann(0, bbox=[1.0, 2.0, 5.0, -3.0])), "must be > 0"),
    "box_outside_image": (_edit_json(_ann(0, bbox=[60.0, 2.0, 30.0, 8.0])), "lies outside"),
}
# A few cases per entry point in the default run; every case with -m slow.
FAST_TRAIN = {"malformed_json", "nan_box", "missing_image_file"}
FAST_EVAL = {"unknown_category", "corrupt_image_file"}


def _params(fast: set[str]) -> list:
    return [
        pytest.param(name, marks=() if name in fast else pytest.mark.slow) for name in sorted(CASES)
    ]


def _break(root: Path, split: str, case: str) -> str:
    mutate, _ = CASES[case]
    return mutate(root / "annotations" / f"instances_{split}.json")


def _assert_no_half_written_outputs(run_dir: Path) -> None:
    assert not (run_dir / "metrics.json").exists()
    assert not (run_dir / "coco_results.json").exists()
    assert not list(run_dir.glob("*.tmp"))
    ckpt_dir = run_dir / "checkpoints"
    assert not temp_files(ckpt_dir)
    for path in checkpoint_files(ckpt_dir):
        load_raw(path)  # whatever was written before the failure is complete


@pytest.mark.parametrize("case", sorted(CASES))
def test_check_data_reports_the_problem(
    case: str, cli: CliServer, shapes_copy: Path, tmp_path: Path
) -> None:
    named = _break(shapes_copy, "train", case)
    ann = shapes_copy / "annotations" / "instances_train.json"
    result = cli.run(
        "retina-check-data", [str(ann), str(shapes_copy / "train")], cwd=tmp_path, timeout=60
    )
    assert result.rc == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    problems = [ln for ln in result.stdout.splitlines() if CASES[case][1] in ln]
    assert problems and named in problems[0] and problems[0].startswith("error: "), result.stdout
    assert "error(s)" in result.stdout.splitlines()[-1]


@pytest.mark.parametrize("case", sorted(WARNING_CASES))
def test_check_data_warns_and_training_repairs(
    case: str, cli: CliServer, shapes_copy: Path, tmp_path: Path
) -> None:
    mutate, expected = WARNING_CASES[case]
    named = mutate(shapes_copy / "annotations" / "instances_train.json")
    args = [named, str(shapes_copy / "train")]
    result = cli.run("retina-check-data", args, cwd=tmp_path, timeout=60)
    assert result.rc == 0, result.stdout + result.stderr
    [line] = [ln for ln in result.stdout.splitlines() if expected in ln]
    assert line.startswith(f"warning: {named}"), result.stdout
    strict = cli.run("retina-check-data", [*args, "--strict"], cwd=tmp_path, timeout=60)
    assert strict.rc == 1 and "refused by --strict" in strict.stdout
    if case != "zero_width_box":
        return  # one training run is enough: loading is tested in tests/data
    run_dir = tmp_path / "run"
    trained = cli.run("retina-train", train_args(shapes_copy, run_dir), cwd=tmp_path)
    assert trained.rc == 0, trained.stderr[-2000:]
    assert "dropped 1 box(es) of zero area" in trained.stdout + trained.stderr
    refused = cli.run("retina-train", train_args(shapes_copy, tmp_path / "run2",
                                                 **{"data.invalid_boxes": "error"}),
                      cwd=tmp_path)
    refused.assert_clean_error(named)


@pytest.mark.parametrize("case", _params(FAST_TRAIN))
def test_train_refuses_bad_training_data(
    case: str, cli: CliServer, shapes_copy: Path, tmp_path: Path
) -> None:
    named = _break(shapes_copy, "train", case)
    run_dir = tmp_path / "run"
    result = cli.run("retina-train", train_args(shapes_copy, run_dir), cwd=tmp_path)
    result.assert_clean_error(named)
    _assert_no_half_written_outputs(run_dir)


@pytest.mark.parametrize("case", _params(FAST_EVAL))
def test_eval_refuses_bad_validation_data(
    case: str, cli: CliServer, shapes_copy: Path, reference_run: dict, tmp_path: Path
) -> None:
    named = _break(shapes_copy, "val", case)
    run_dir = tmp_path / "eval"
    checkpoint = reference_run["dir"] / "checkpoints" / "last.pt"
    argv = [
        f"checkpoint={checkpoint}",
        "data=shapes",
        f"data.root={shapes_copy}",
        "eval.num_workers=0",
        f"hydra.run.dir={run_dir}",
    ]
    result = cli.run("retina-eval", argv, cwd=tmp_path)
    result.assert_clean_error(named)
    _assert_no_half_written_outputs(run_dir)

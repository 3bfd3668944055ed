"""``retina-convert-data`` through its command line, and a VOC -> COCO -> ``retina-train`` ->
``retina-eval`` round trip on a few generated images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retina.cli.convert_data import main

COLORS = {"red": (230, 30, 30), "blue": (30, 30, 230)}


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    """Eight 64x64 images in VOC's layout, one filled rectangle each (one of them a PNG
    named .jpg, one a zero-area box, one difficult); trainval 6, test 2."""
    root = tmp_path_factory.mktemp("voc")
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(8):
        name = "red" if i % 2 else "blue"
        x1, y1 = (int(v) for v in rng.integers(4, 24, 2))
        x2, y2 = x1 + int(rng.integers(16, 36)), y1 + int(rng.integers(16, 36))
        pixels = np.full((64, 64, 3), 128, dtype=np.uint8)
        pixels[y1:y2, x1:x2] = COLORS[name]
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{i}.jpg",
                                     format="PNG" if i == 3 else "JPEG", quality=95)
        objects = [(name, x1 + 1, y1 + 1, x2, y2, int(i == 5))]
        if i == 2:
            objects.append((name, 40, 40, 40, 40, 0))  # zero area
        xml = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{a}</xmin>"
            f"<ymin>{b}</ymin><xmax>{c}</xmax><ymax>{e}</ymax></bndbox></object>"
            for n, a, b, c, e, d in objects)
        (root / "Annotations" / f"{i}.xml").write_text(
            f"<annotation><filename>{i}.jpg</filename><size><width>64</width>"
            f"<height>64</height></size>{xml}</annotation>")
    (root / "ImageSets/Main/trainval.txt").write_text("".join(f"{i}\n" for i in range(6)))
    (root / "ImageSets/Main/test.txt").write_text("6\n7\n")
    return root


def _convert(voc: Path, split: str, out: Path) -> int:
    return main(["voc", str(voc / "Annotations"), str(voc / "JPEGImages"), "--out", str(out),
                 "--split-file", str(voc / f"ImageSets/Main/{split}.txt")])


def test_voc_cli_prints_what_it_wrote(voc, tmp_path, capsys):
    out = tmp_path / "sub" / "train.json"
    assert _convert(voc, "trainval", out) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: 6 images, 7 boxes (blue 4, red 3)" in printed
    assert "1 zero-area boxes kept" in printed and "1 difficult objects" in printed
    assert f"data=coco data.root={(voc / 'JPEGImages').resolve()}" in printed
    data = json.loads(out.read_text())
    assert len(data["images"]) == 6 and not list(out.parent.glob("*.tmp"))


def test_cli_errors_are_one_line_exit_1(voc, tmp_path, capsys):
    out = tmp_path / "x.json"
    status = main(["voc", str(voc / "Annotations"), str(voc / "JPEGImages"), "--out", str(out),
                   "--classes", "red"])
    err = capsys.readouterr().err
    assert status == 1 and not out.exists()
    assert err.startswith("retina-convert-data: error: ") and err.count("\n") == 1
    assert "0.xml:1: object 0: unknown class 'blue'" in err
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "0.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.5 0.5\n")
    (tmp_path / "names.txt").write_text("thing\n")
    status = main(["yolo", str(labels), str(voc / "JPEGImages"), "--out", str(out),
                   "--names", str(tmp_path / "names.txt")])
    err = capsys.readouterr().err
    assert status == 1 and f"{labels / '0.txt'}:2: expected 'class cx cy w h'" in err


def _run(module: str, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.slow  # about 15 s: two training iterations and two evaluations in subprocesses
def test_voc_to_coco_to_training_to_evaluation(voc, tmp_path):
    train_ann, val_ann = tmp_path / "train.json", tmp_path / "val.json"
    converted = _run("retina.cli.convert_data", [
        "voc", str(voc / "Annotations"), str(voc / "JPEGImages"), "--out", str(train_ann),
        "--split-file", str(voc / "ImageSets/Main/trainval.txt")])
    assert converted.returncode == 0, converted.stderr
    assert _convert(voc, "test", val_ann) == 0
    checked = _run("retina.cli.check_data", [str(train_ann), str(voc / "JPEGImages")])
    assert checked.returncode == 0 and "0 error(s), 1 warning(s)" in checked.stdout
    run_dir = tmp_path / "run"
    size = [f"data.{s}_transforms.{k}=64" for s in ("train", "val") for k in ("min_size",
                                                                             "max_size")]
    trained = _run("retina.cli.train", [
        "data=coco", f"data.root={voc / 'JPEGImages'}", "data.train_images=.",
        "data.val_images=.", f"data.train_ann={train_ann}", f"data.val_ann={val_ann}", *size,
        "model.fpn_channels=16", "train.batch_size=2", "train.max_iter=2", "train.num_workers=0",
        "train.eval_period=0", "train.vis_images=0", "schedule.steps=[1]",
        "schedule.warmup_iters=1", f"hydra.run.dir={run_dir}"])
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "dropped 1 box(es) of zero area" in trained.stdout + trained.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["per_category"]) == {"blue", "red"} and np.isfinite(metrics["AP"])
    evaluated = _run("retina.cli.eval", [f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}",
                                     f"hydra.run.dir={tmp_path / 'eval'}", "eval.num_workers=0"])
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert again["AP"] == pytest.approx(metrics["AP"], abs=1e-6)


def test_out_that_is_an_input_file_is_refused(voc, tmp_path, capsys):
    """``--out`` naming the names file, a label, an annotation or an image would replace it."""
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "0.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    names = tmp_path / "names.txt"
    names.write_text("thing\n")
    yolo = ["yolo", str(labels), str(voc / "JPEGImages"), "--names", str(names), "--out"]
    before = {p: p.read_bytes() for p in (names, labels / "0.txt", voc / "JPEGImages/0.jpg")}
    for out in before:
        assert main([*yolo, str(out)]) == 1
        assert capsys.readouterr().err == (f"retina-convert-data: error: {out}: --out is one of "
                                           "the input files; nothing written\n")
    xml = voc / "Annotations" / "0.xml"
    before[xml] = xml.read_bytes()
    assert main(["voc", str(voc / "Annotations"), str(voc / "JPEGImages"), "--out", str(xml)]) == 1
    assert all(p.read_bytes() == content for p, content in before.items())
    assert main([*yolo, str(tmp_path / "labels.json")]) == 0


def test_output_piped_into_a_closed_reader_is_no_traceback(voc, tmp_path):
    """``retina-convert-data ... | head -1``: the reader is gone before the summary."""
    out = tmp_path / "piped.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "retina.cli.convert_data", "voc", str(voc / "Annotations"),
         str(voc / "JPEGImages"), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)  # fmt: skip
    proc.stdout.close()  # no reader: every print raises BrokenPipeError
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and err == b"" and json.loads(out.read_text())["images"]

"""One line instead of a traceback, a hang or a stray output: bad devices and sizes,
unusable run directories, FIFOs, duplicate category names, ``retina-plot out=DIR/``,
``retina-report`` on a folder that is not a sweep, stored data configs outside
``paths.data_dir``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from relhelp import load_raw, train_args


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu(cli, tiny_shapes, tmp_path):
    args = train_args(tiny_shapes, tmp_path / "run", **{"train.device": "cuda"})
    cli.run("retina-train", args, cwd=tmp_path).assert_clean_error("train.device")


@pytest.mark.parametrize(
    ("override", "needle"),
    [({"train.batch_size": 64}, "train.batch_size"), ({"train.seed": 2**64 + 1}, "train.seed")],
)
def test_bad_sizes(cli, tiny_shapes, tmp_path, override, needle):
    args = train_args(tiny_shapes, tmp_path / "run", **override)
    cli.run("retina-train", args, cwd=tmp_path).assert_clean_error(needle)


@pytest.mark.parametrize("prog", ["retina-train", "retina-eval", "retina-predict"])
@pytest.mark.parametrize("kind", ["file", "below_file"])
def test_run_dir_that_is_a_file(cli, tiny_shapes, reference_run, tmp_path, prog, kind):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder\n")
    run_dir = blocker if kind == "file" else blocker / "sub"
    ckpt = reference_run["dir"] / "checkpoints" / "last.pt"
    argv = {
        "retina-train": train_args(tiny_shapes, run_dir),
        "retina-eval": [f"checkpoint={ckpt}", f"hydra.run.dir={run_dir}"],
        "retina-predict": [f"checkpoint={ckpt}", f"input={tiny_shapes / 'val'}",
                           f"output={tmp_path / 'out'}", f"hydra.run.dir={run_dir}"],
    }[prog]  # fmt: skip
    cli.run(prog, argv, cwd=tmp_path).assert_clean_error(str(run_dir))
    assert blocker.read_text() == "not a folder\n"


def test_fifo_annotation_file(cli, shapes_copy, tmp_path):
    ann = shapes_copy / "annotations" / "instances_train.json"
    ann.unlink()
    os.mkfifo(ann)
    check = cli.run("retina-check-data", [str(ann), "--no-images"], cwd=tmp_path, timeout=60)
    assert not check.timed_out and check.rc == 1, check.stdout
    assert "named pipe (FIFO), not a regular file" in check.stdout
    train = cli.run("retina-train", train_args(shapes_copy, tmp_path / "run"), cwd=tmp_path,
                    timeout=60)  # fmt: skip
    train.assert_clean_error(str(ann), "not a regular file")


def test_fifo_checkpoint(cli, tmp_path):
    fifo = tmp_path / "last.pt"
    os.mkfifo(fifo)
    result = cli.run("retina-eval", [f"checkpoint={fifo}", f"hydra.run.dir={tmp_path / 'e'}"],
                     cwd=tmp_path, timeout=60)  # fmt: skip
    result.assert_clean_error(str(fifo), "not a regular file")


def test_duplicate_category_names(cli, shapes_copy, tmp_path):
    ann = shapes_copy / "annotations" / "instances_val.json"
    coco = json.loads(ann.read_text())
    coco["categories"][1]["name"] = coco["categories"][0]["name"]
    ann.write_text(json.dumps(coco))
    result = cli.run("retina-check-data", [str(ann), "--no-images"], cwd=tmp_path, timeout=60)
    assert result.rc == 1, result.stdout
    assert f"category name {coco['categories'][0]['name']!r} is used by" in result.stdout


def test_eval_does_not_generate_a_stored_dataset_elsewhere(cli, reference_run, tmp_path):
    """A checkpoint trained with the relative default ``./data/shapes``, evaluated from
    another folder without ``data=``: one line, nothing generated there."""
    state = load_raw(reference_run["dir"] / "checkpoints" / "last.pt")
    state["config"]["data"]["root"] = "./elsewhere/shapes"
    state["config"]["data"]["generator"] = {"train": 2, "val": 1, "size": 64}
    ckpt = tmp_path / "moved.pt"
    torch.save(state, ckpt)
    other = tmp_path / "other"
    other.mkdir()
    result = cli.run("retina-eval", [f"checkpoint={ckpt}"], cwd=other, timeout=60)
    result.assert_clean_error("elsewhere/shapes", "dataset not found", "data=")
    assert not (other / "elsewhere").exists()


def test_plot_out_folder(cli, tmp_path):
    for out, folder in ((f"{tmp_path / 'new'}/", tmp_path / "new"), (str(tmp_path), tmp_path)):
        result = cli.run("retina-plot", ["focal-curves", f"out={out}"], cwd=tmp_path)
        assert result.rc == 0, result.stderr
        assert (folder / "focal_curves.png").is_file()
        assert result.stdout.strip() == f"wrote {folder / 'focal_curves.png'}"
    assert not (tmp_path / "new.png").exists()


def test_report_on_unrelated_folder(cli, tmp_path):
    folder = tmp_path / "photos"
    for name in ("0", "1"):
        (folder / name).mkdir(parents=True)
        (folder / name / "a.txt").write_text("x")
    result = cli.run("retina-report", [str(folder)], cwd=tmp_path)
    assert result.rc == 1 and "Traceback" not in result.stderr, result.stderr
    assert "no runs found" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["0", "1"]


@pytest.mark.parametrize("prog", ["plot", "report"])
def test_unwritable_output_folder(reference_run, tmp_path, monkeypatch, capsys, prog):
    """Read-only folders (simulated: the tests may run as root) give one line."""
    import errno
    import tempfile

    from retina.cli import plot, report

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), kwargs.get("dir"))

    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    for item in (".hydra", "metrics.json"):
        src = reference_run["dir"] / item
        if src.is_dir():
            (sweep / "0" / item).mkdir()
            for f in src.iterdir():
                (sweep / "0" / item / f.name).write_bytes(f.read_bytes())
        else:
            (sweep / "0" / item).write_bytes(src.read_bytes())
    monkeypatch.setattr(tempfile, "mkstemp", denied)
    if prog == "plot":
        rc = plot.main(["focal-curves", f"out={tmp_path / 'fig.png'}"])
    else:
        rc = report.main([str(sweep)])
    err = capsys.readouterr().err
    assert rc == 1 and "Permission denied" in err and len(err.strip().splitlines()) == 1, err
    assert not list(Path(tmp_path).glob("*.png"))

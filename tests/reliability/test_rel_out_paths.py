"""Every ``--out`` refuses what is not a regular file (or, for a folder output, not a
folder): a FIFO, a symbolic link such as one to ``/proc/self/fd/1``, a device, a folder.
One line, exit 1, nothing written and nothing replaced, before any work."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retina.cli import convert_data, make_shapes

ROOT = Path(__file__).resolve().parents[2]


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _stdout_link(path: Path) -> None:
    path.symlink_to("/proc/self/fd/1")


def _file_link(path: Path) -> None:
    (path.parent / "target.json").write_text("keep\n")
    path.symlink_to(path.parent / "target.json")


def _folder(path: Path) -> None:
    path.mkdir()


BLOCKERS: dict[str, tuple[Callable[[Path], None], str]] = {
    "fifo": (_fifo, "is a named pipe (FIFO), not a regular file"),
    "stdout_link": (_stdout_link, "is a symbolic link (to /proc/self/fd/1)"),
    "file_link": (_file_link, "is a symbolic link (to "),
    "folder": (_folder, "is a folder, not a regular file"),
}


def _unchanged(path: Path, kind: str) -> bool:
    mode = os.lstat(path).st_mode
    if kind == "fifo":
        return stat.S_ISFIFO(mode)
    if kind == "folder":
        return stat.S_ISDIR(mode) and not any(path.iterdir())
    return stat.S_ISLNK(mode) and (kind != "file_link"
                                   or (path.parent / "target.json").read_text() == "keep\n")


@pytest.fixture(scope="module")
def yolo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("yolo")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(root / "images" / "a.png")
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "names.txt").write_text("thing\n")
    return root


@pytest.mark.parametrize("kind", sorted(BLOCKERS))
def test_convert_data_out(yolo, tmp_path, capsys, kind):
    make, reason = BLOCKERS[kind]
    out = tmp_path / "out.json"
    make(out)
    status = convert_data.main(["yolo", str(yolo / "labels"), str(yolo / "images"),
                                "--names", str(yolo / "names.txt"), "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 1 and captured.out == ""
    assert captured.err.startswith(f"retina-convert-data: error: {out}: --out {reason}")
    assert captured.err.endswith("; nothing written\n") and captured.err.count("\n") == 1
    assert _unchanged(out, kind)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out.json"] + (["target.json"] if kind == "file_link" else []))


def test_convert_data_out_char_device(yolo, tmp_path, capsys):
    """A character device such as /dev/full: as root, renaming over it would replace it.
    (A private node like /dev/null's, never the real one: old code replaced what it got.)"""
    device = tmp_path / "full"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except (PermissionError, OSError):
        pytest.skip("cannot create a device node here (needs root)")
    status = convert_data.main(["yolo", str(yolo / "labels"), str(yolo / "images"),
                                "--names", str(yolo / "names.txt"), "--out", str(device)])
    err = capsys.readouterr().err
    assert status == 1 and "--out is a character device, not a regular file" in err
    assert stat.S_ISCHR(os.lstat(device).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["full"]


@pytest.mark.parametrize("kind", ["fifo", "file", "stdout_link"])
def test_make_shapes_out(tmp_path, capsys, kind):
    out = tmp_path / "shapes"
    {"fifo": _fifo, "stdout_link": _stdout_link,
     "file": lambda p: p.write_text("keep\n")}[kind](out)
    with pytest.raises(SystemExit) as info:
        make_shapes.main(["--out", str(out), "--train", "1", "--val", "0", "--size", "32",
                          "--workers", "1"])
    err = capsys.readouterr().err
    assert info.value.code == 1 and err.count("\n") == 1
    assert err.startswith(f"retina-make-shapes: error: {out}: --out is ")
    assert "not a folder; nothing written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes"]


def test_bench_data_out(tmp_path):
    """The benchmark scripts go through the same check (bench_data's is the quick one)."""
    out = tmp_path / "bench"
    out.mkdir()
    os.mkfifo(out / "results.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_data.py"), "--out",
                             str(out), "--quick"], capture_output=True, text=True, timeout=120,
                            env=env)  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"bench_data: error: {out / 'results.json'}: output file is "
                                     "a named pipe (FIFO), not a regular file; nothing written")
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]


def test_convert_torchvision_output(tmp_path):
    """The checkpoint writer of scripts/convert_torchvision.py: checked before loading."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_torchvision",
                                                  ROOT / "scripts" / "convert_torchvision.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "ours.pt"
    _stdout_link(out)
    with pytest.raises(SystemExit, match=r"convert_torchvision: error: .*ours\.pt: output is a "
                                         r"symbolic link \(to /proc/self/fd/1\)"):
        script.main([str(tmp_path / "absent.pth"), str(out)])
    assert os.path.islink(out)

"""retina.utils.io: the one atomic write."""

from __future__ import annotations

import os
import re

import pytest

from retina.errors import ResultsError
from retina.utils.io import (
    TMP_PREFIX,
    output_kind,
    require_output_file,
    require_output_folder,
    write_json_atomic,
    write_text_atomic,
)


def test_written_files_get_the_mode_a_plain_open_gives(tmp_path):
    """mkstemp's owner-only mode must not leak into results other users read."""
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    written = write_json_atomic(tmp_path / "metrics.json", {"AP": 1.0})
    assert os.stat(written).st_mode & 0o777 == os.stat(plain).st_mode & 0o777


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = write_text_atomic(tmp_path / "table.md", "old\n")

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(ResultsError, match="table.md: cannot write .No space left"):
        write_text_atomic(path, "new\n")
    assert path.read_text() == "old\n"
    assert not list(tmp_path.glob(f"{TMP_PREFIX}*"))


def test_json_is_strict(tmp_path):
    """Issue 23: NaN and Infinity (e.g. ``retina-stats`` on an empty dataset) are not JSON;
    they are written as null."""
    import json
    import math

    import numpy as np

    payload = {"a": math.nan, "b": [math.inf, -math.inf, 1.5], "c": np.float32("nan"),
               "d": (np.float64(2.0), 3), "e": True}
    path = write_json_atomic(tmp_path / "stats.json", payload, indent=2)

    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    data = json.loads(path.read_text(), parse_constant=refuse)
    assert data == {"a": None, "b": [None, None, 1.5], "c": None, "d": [2.0, 3], "e": True}


def test_atomic_writes_refuse_to_replace_what_is_not_a_regular_file(tmp_path):
    """Renaming over a FIFO or a symbolic link would replace it instead of writing to it."""
    fifo, link, folder = tmp_path / "fifo.json", tmp_path / "link.json", tmp_path / "dir.json"
    os.mkfifo(fifo)
    link.symlink_to("/proc/self/fd/1")
    folder.mkdir()
    for path, kind in ((fifo, "a named pipe (FIFO)"), (folder, "a folder"),
                       (link, "a symbolic link (to /proc/self/fd/1)")):
        with pytest.raises(ResultsError, match=rf"{path.name}: cannot write \(it is "
                                               rf"{re.escape(kind)}, not a regular file\)$"):
            write_json_atomic(path, {"AP": 1.0})
    assert os.path.islink(link) and os.path.isdir(folder) and not list(folder.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.json", "fifo.json", "link.json"]
    assert write_json_atomic(tmp_path / "new.json", {}).read_text() == "{}\n"


def test_output_checks_name_what_is_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert output_kind(tmp_path / "file") is None and output_kind(tmp_path / "absent") is None
    assert output_kind(os.devnull) == "a character device"
    assert require_output_file(tmp_path / "file") == tmp_path / "file"
    with pytest.raises(ResultsError, match=r"dangling: --out is a symbolic link \(to .*nowhere\)"
                                           r", not a regular file; nothing written$"):
        require_output_file(tmp_path / "dangling", "--out")
    assert require_output_folder(tmp_path) == tmp_path
    assert require_output_folder(tmp_path / "absent") == tmp_path / "absent"
    for name, kind in (("file", "a regular file"), ("dangling", "a broken symbolic link")):
        with pytest.raises(ResultsError, match=rf"{name}: output folder is {kind}, not a folder"):
            require_output_folder(tmp_path / name)

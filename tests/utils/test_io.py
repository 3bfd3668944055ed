"""retina.utils.io: the one atomic write."""

from __future__ import annotations

import os

import pytest

from retina.errors import ResultsError
from retina.utils.io import TMP_PREFIX, write_json_atomic, write_text_atomic


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

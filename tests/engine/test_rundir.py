"""retina.engine.rundir: the run folder's lock and the probe that reports who holds it."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import pytest

from retina.engine.rundir import LOCK_NAME, lock_holder, lock_run_dir, release_run_dir
from retina.errors import RunDirError


def test_a_probe_in_progress_never_refuses_a_run(tmp_path: Path):
    """retina-report probes a folder's lock with a shared lock held for an instant; a run
    taking the folder at that instant waits it out instead of saying it is in use."""
    (tmp_path / LOCK_NAME).write_text("123\n")
    probe = open(tmp_path / LOCK_NAME, encoding="utf-8")  # noqa: SIM115
    fcntl.flock(probe.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    timer = threading.Timer(0.08, lambda: fcntl.flock(probe.fileno(), fcntl.LOCK_UN))
    timer.start()
    try:
        lock_run_dir(tmp_path)
        assert lock_holder(tmp_path) == str(os.getpid())
    finally:
        timer.join()
        probe.close()
        release_run_dir(tmp_path)
    assert lock_holder(tmp_path) is None


def test_a_held_folder_is_refused_with_the_holders_pid(tmp_path: Path):
    (tmp_path / LOCK_NAME).write_text("4242\n")
    holder = open(tmp_path / LOCK_NAME, encoding="utf-8")  # noqa: SIM115
    fcntl.flock(holder.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        assert lock_holder(tmp_path) == "4242"
        with pytest.raises(RunDirError, match="in use by another retina process .pid 4242."):
            lock_run_dir(tmp_path)
    finally:
        holder.close()

"""Hydra callbacks that check run folders before Hydra writes into them.

Hydra writes ``.hydra/{config,hydra,overrides}.yaml`` into a run's or job's folder (and
``multirun.yaml`` into a sweep's) before the program's own code runs, so a refusal made there
comes after the folder's record was rewritten. These callbacks run first:

- :class:`SweepCheck` (``hydra.callbacks.sweep_check`` in ``configs/train.yaml``) composes
  every job of a ``retina-train -m`` sweep as the basic sweeper will and compares it with
  what its folder holds (:func:`retina.engine.sweep.job_state`).
- :class:`EvalDirCheck` (``configs/eval.yaml``) takes the run folder's lock for
  ``retina-eval`` and refuses a training run's folder
  (:func:`retina.engine.rundir.require_eval_dir`).

A refusal stops the program with one line and exit status 1 (Hydra turns an exception raised
in a callback into a warning and goes on, so they exit themselves). Other sweepers than the
basic one (their jobs are not known in advance) are checked job by job only.
"""

from __future__ import annotations

import copy
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from retina.cli import common
from retina.errors import one_line, user_errors

__all__ = ["BASIC_SWEEPER", "EvalDirCheck", "SweepCheck", "check_eval_dirs", "check_sweep_jobs"]

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def _job_overrides(config: DictConfig) -> list[list[str]]:
    """The overrides of every job, in Hydra's job order (what ``BasicSweeper`` launches)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    batches = BasicSweeper.split_arguments(parser.parse_overrides(arguments), None)
    return [list(job) for batch in batches for job in batch]


def _resolved(config: DictConfig) -> dict[str, Any] | None:
    try:
        value = OmegaConf.to_container(config, resolve=True)
    except Exception:  # noqa: BLE001 - unresolvable: the job itself reports it with its key
        return None
    return value if isinstance(value, dict) else None


def _started_config(job_dir: Path) -> dict[str, Any] | None:
    """The resolved config the folder's job started with (its ``.hydra/config.yaml``),
    resolved under the current job's Hydra config (its output dir is the same folder)."""
    path = job_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    try:
        recorded = OmegaConf.load(path)
    except Exception:  # noqa: BLE001 - an unreadable record is not compared
        return None
    return _resolved(recorded) if isinstance(recorded, DictConfig) else None


def _jobs(config: DictConfig) -> Iterator[tuple[str, Path, DictConfig]]:
    """``(job number, job folder, job config)`` for every job, with Hydra's global config set
    to the job's while it is looked at."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    loader = GlobalHydra.instance().config_loader()
    hydra_config = HydraConfig.instance()
    previous = hydra_config.cfg
    try:
        for num, overrides in enumerate(_job_overrides(config)):
            job = loader.load_sweep_config(config, overrides)
            with open_dict(job):
                job.hydra.job.id = num
                job.hydra.job.num = num
            hydra_config.set_config(job)
            job_dir = Path(str(job.hydra.sweep.dir)) / str(job.hydra.sweep.subdir)
            with read_write(job.hydra.runtime), open_dict(job.hydra.runtime):
                job.hydra.runtime.output_dir = str(job_dir.absolute())
            hydra_config.set_config(job)
            task = copy.deepcopy(job)
            with open_dict(task):
                del task["hydra"]
            yield str(num), job_dir, task
    finally:
        if previous is not None:
            hydra_config.set_config(previous)


def check_sweep_jobs(config: DictConfig) -> int:
    """Compare every job of a sweep with what its folder holds (nothing is written).

    Returns:
        the number of job folders that exist (0 when the sweep folder is new: nothing is
        composed then).

    Raises:
        ConfigError: a job's folder holds a finished or interrupted job of another config.
    """
    from retina.engine.sweep import job_state

    if OmegaConf.select(config, "hydra.sweeper._target_") != BASIC_SWEEPER:
        return 0
    if not Path(str(config.hydra.sweep.dir)).is_dir():
        return 0
    existing = 0
    for _num, job_dir, task in _jobs(config):
        if not job_dir.is_dir():
            continue
        existing += 1
        now = _resolved(task)
        if now is not None:
            job_state(job_dir, now, started=_started_config(job_dir))
    return existing


def check_eval_dirs(config: DictConfig, multirun: bool) -> list[Path]:
    """Lock ``retina-eval``'s run folder (every job's folder of a sweep) for this process,
    after checking that it is not a training run's. Only rank 0 of a ``torchrun`` locks.

    Returns:
        the folders checked.

    Raises:
        RunDirError: a training run's folder, or one another retina process holds.
    """
    from retina.engine import rundir

    if multirun:
        if OmegaConf.select(config, "hydra.sweeper._target_") != BASIC_SWEEPER:
            return []
        folders = [(job_dir, "hydra.sweep.dir") for _num, job_dir, _task in _jobs(config)]
    else:
        folders = [(Path(str(config.hydra.run.dir)), "hydra.run.dir")]
    for folder, key in folders:
        rundir.require_eval_dir(folder, key)
    if int(os.environ.get("RANK", "0")) == 0:
        for folder, key in folders:
            rundir.lock_run_dir(folder, key)
    return [folder for folder, _key in folders]


def _exit_on_refusal(prog: str, check: Callable[[], Any]) -> None:
    """Run ``check``; a user error exits with one line (a ``SystemExit`` passes through
    Hydra's handling of callback errors, an exception would not)."""
    try:
        check()
    except user_errors() as exc:
        if common._traceback_requested:
            traceback.print_exc()
        sys.stderr.write(f"{prog}: error: {one_line(exc)}\n")
        sys.exit(1)


class SweepCheck(Callback):
    """Hydra callback of ``retina-train``: :func:`check_sweep_jobs` before a multirun's
    first job."""

    def __init__(self, prog: str = "retina-train") -> None:
        self.prog = prog

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _exit_on_refusal(self.prog, lambda: check_sweep_jobs(config))


class EvalDirCheck(Callback):
    """Hydra callback of ``retina-eval``: :func:`check_eval_dirs` before a run or a
    multirun starts."""

    def __init__(self, prog: str = "retina-eval") -> None:
        self.prog = prog

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _exit_on_refusal(self.prog, lambda: check_eval_dirs(config, multirun=False))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _exit_on_refusal(self.prog, lambda: check_eval_dirs(config, multirun=True))

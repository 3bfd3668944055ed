"""Reading a Hydra multirun directory into :class:`~retina.analysis.runs.Run` records.

Every job is kept: finished, failed and unfinished ones as
:func:`~retina.analysis.runs.read_run` reads their folders, and jobs the sweep never started
(an interrupted sweep, a cluster time limit), rebuilt from ``multirun.yaml`` exactly as
Hydra's basic sweeper expands its grid, so that job ``i`` is folder ``DIR/i``.
"""

from __future__ import annotations

from pathlib import Path

from retina.analysis.runs import (
    Run,
    experiment_of,
    hydra_choices,
    load_yaml,
    read_run,
    split_override,
)

__all__ = ["REFERENCE_DIR", "collect_runs", "expected_jobs"]

REFERENCE_DIR = "torchvision"
"""Sub-folder of a sweep holding reference runs of another implementation (one folder per run,
written by ``scripts/train_torchvision.py``); they are listed after the sweep's jobs, and the
sweep's own jobs then get ``implementation: retina`` in their config."""


def expected_jobs(multirun_dir: Path) -> list[list[str]]:
    """The overrides of every job the sweep in ``multirun_dir/multirun.yaml`` launches.

    Expands ``hydra.sweeper.params`` plus the command-line overrides the way Hydra's basic
    sweeper does (later keys vary fastest). Returns ``[]`` when the file is missing or its
    sweep cannot be expanded without the config tree (e.g. ``glob(...)`` over a group).
    """
    conf = load_yaml(multirun_dir / "multirun.yaml")
    if not isinstance(conf, dict):
        return []
    hydra_conf = conf.get("hydra") or {}
    params = (hydra_conf.get("sweeper") or {}).get("params") or {}
    task = (hydra_conf.get("overrides") or {}).get("task") or []
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    lines = [f"{k}={v}" for k, v in params.items()] + [str(t) for t in task]
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
        batches = BasicSweeper.split_arguments(parsed, None)
    except (HydraException, ValueError, AssertionError):
        return []
    return [list(job) for batch in batches for job in batch]


def _job_dirs(multirun_dir: Path) -> dict[int, Path]:
    return {
        int(p.name): p
        for p in multirun_dir.iterdir()
        if p.is_dir() and p.name.isdigit()
    }


def _is_job(job_dir: Path) -> bool:
    """A folder a Hydra job wrote (Hydra writes ``.hydra/`` before the job starts)."""
    return (job_dir / ".hydra").is_dir() or (job_dir / "metrics.json").is_file()


def collect_runs(multirun_dir: Path) -> list[Run]:
    """Every job of the multirun directory, in sweep order, none dropped.

    A directory that is itself a single run (it holds ``metrics.json`` or ``.hydra/``) is
    read as a one-job sweep.

    Raises:
        FileNotFoundError: ``multirun_dir`` does not exist or is not a directory.
        ValueError: it holds neither job folders nor a ``multirun.yaml``.
    """
    multirun_dir = Path(multirun_dir)
    if not multirun_dir.is_dir():
        raise FileNotFoundError(f"{multirun_dir}: no such directory")
    jobs = _job_dirs(multirun_dir)
    expected = expected_jobs(multirun_dir)
    if not expected and not any(_is_job(p) for p in jobs.values()):
        jobs = {}  # numbered folders, but none a job wrote: not a sweep
    references = _reference_runs(multirun_dir)
    if not jobs and not expected:
        if (multirun_dir / "metrics.json").is_file() or (multirun_dir / ".hydra").is_dir():
            return [read_run(multirun_dir)]
        if references:
            return references
        raise ValueError(
            f"{multirun_dir}: no runs found (expected job folders 0/, 1/, ... and "
            "multirun.yaml from `retina-train -m ...`)"
        )
    runs = []
    choices = hydra_choices(load_yaml(multirun_dir / "multirun.yaml"))
    experiment = next((experiment_of(job, choices) for job in expected), None)
    for index in range(max([len(expected), *[i + 1 for i in jobs]])):
        if index in jobs:
            runs.append(read_run(jobs[index]))
        else:
            overrides = expected[index] if index < len(expected) else []
            runs.append(Run(name=str(index), status="not started", overrides=overrides,
                            choices=_job_choices(choices, overrides), experiment=experiment,
                            reason="" if overrides else "folder missing"))
    if references:  # the sweep's own jobs become the "retina" rows beside them
        for run in runs:
            run.config.setdefault("implementation", "retina")
    return runs + references


def _reference_runs(multirun_dir: Path) -> list[Run]:
    """The runs under ``multirun_dir/REFERENCE_DIR/*/``, by folder name."""
    folder = multirun_dir / REFERENCE_DIR
    if not folder.is_dir():
        return []
    runs = []
    for job_dir in sorted(p for p in folder.iterdir() if p.is_dir() and _is_job(p)):
        run = read_run(job_dir)
        run.name = f"{REFERENCE_DIR}/{job_dir.name}"
        run.config.setdefault("implementation", REFERENCE_DIR)
        runs.append(run)
    return runs


def _job_choices(choices: dict[str, str], overrides: list[str]) -> dict[str, str]:
    """The sweep's group choices with this job's group overrides (``loss=ce``) applied."""
    choices = dict(choices)
    for text in overrides:
        key, value = split_override(text)
        if key in choices:
            choices[key] = value
    return choices

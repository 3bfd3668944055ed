"""Reading a Hydra multirun directory into :class:`Run` records for ``retina-report``.

Every job is kept: finished ones with their ``metrics.json``; failed or unfinished ones with
the reason found in ``metrics.json`` or in the job's log; and jobs the sweep never started (an
interrupted sweep, a cluster time limit), rebuilt from ``multirun.yaml`` exactly as Hydra's
basic sweeper expands its grid, so that job ``i`` is folder ``DIR/i``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["REFERENCE_DIR", "Run", "brief", "collect_runs", "expected_jobs", "read_run",
           "split_override"]

REFERENCE_DIR = "torchvision"
"""Sub-folder of a sweep holding reference runs of another implementation (one folder per run,
written by ``scripts/train_torchvision.py``); they are listed after the sweep's jobs, and the
sweep's own jobs then get ``implementation: retina`` in their config."""

_LOG_PREFIX = re.compile(r"^\[[^\]]*\]\[[^\]]*\]\[[A-Z]+\] - ")
_ERROR_LINE = re.compile(r"error|exception|diverg|non-finite|nan loss|killed", re.IGNORECASE)
_FAILED_STATUS = ("failed", "error", "diverged", "crashed", "killed")


@dataclass
class Run:
    """One job of a sweep.

    Attributes:
        name: the job's folder name (its index in the sweep).
        status: ``"done"``, ``"failed"``, ``"unfinished"`` or ``"not started"``.
        reason: why a job is not done, when discoverable.
        overrides: the job's command-line overrides, e.g. ``["loss.alpha=0.25"]``.
        metrics: COCO metrics in percent (``AP``, ``AP50``, ...), empty unless done.
        config: the resolved config from ``metrics.json`` (else ``.hydra/config.yaml``).
        choices: Hydra's config-group choices of the job (``{"loss": "focal", ...}``).
        experiment: the ``+experiment=NAME`` of the sweep, if any.
        train_seconds: the training time ``retina-train`` recorded in ``metrics.json`` (the
            final evaluation excluded; a resumed job: its last segment); None if absent.
    """

    name: str
    status: str
    reason: str = ""
    overrides: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    choices: dict[str, str] = field(default_factory=dict)
    experiment: str | None = None
    train_seconds: float | None = None
    path: Path | None = None


def _load_yaml(path: Path) -> Any:
    """Plain YAML (Hydra's files hold no tags); ``None`` when missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None


def split_override(text: str) -> tuple[str, str]:
    """``"+loss.gamma=2"`` -> ``("loss.gamma", "2")`` (Hydra's ``+``/``~`` prefixes dropped)."""
    key, _, value = text.partition("=")
    return key.lstrip("+~"), value


def _experiment(overrides: list[str], choices: dict[str, str]) -> str | None:
    for text in overrides:
        key, value = split_override(text)
        if key == "experiment":
            return value
    return choices.get("experiment")


def expected_jobs(multirun_dir: Path) -> list[list[str]]:
    """The overrides of every job the sweep in ``multirun_dir/multirun.yaml`` launches.

    Expands ``hydra.sweeper.params`` plus the command-line overrides the way Hydra's basic
    sweeper does (later keys vary fastest). Returns ``[]`` when the file is missing or its
    sweep cannot be expanded without the config tree (e.g. ``glob(...)`` over a group).
    """
    conf = _load_yaml(multirun_dir / "multirun.yaml")
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


def _metrics_from(data: dict[str, Any]) -> dict[str, float]:
    for key in ("metrics", "bbox", "val"):
        if isinstance(data.get(key), dict) and "AP" in data[key]:
            data = data[key]
            break
    return {
        k: float(v)
        for k, v in data.items()
        if (k.startswith(("AP", "AR")) or k == "inference_ms_per_image")
        and isinstance(v, int | float) and not isinstance(v, bool)
    }


def brief(text: str, limit: int = 160) -> str:
    """``text`` up to its first ``;`` (the cause, not the advice), at most ``limit`` characters
    and then cut at a word boundary with an ellipsis."""
    text = " ".join(text.split())
    head = text.split("; ", 1)[0]
    if len(head) <= limit:
        return head
    cut = head[: limit - 1].rsplit(" ", 1)[0]
    return cut + "…"


def _log_reason(job_dir: Path) -> tuple[str, bool]:
    """(reason, is_error) from the job's Hydra log: its last error line, else its last line."""
    last = ""
    for log in sorted(job_dir.glob("*.log")):
        try:
            lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines()]
        except OSError:
            continue
        lines = [_LOG_PREFIX.sub("", ln) for ln in lines if ln]
        errors = [ln for ln in lines if _ERROR_LINE.search(ln)]
        if errors:
            return brief(errors[-1]), True
        if lines:
            last = brief(lines[-1])
    return (f"no metrics.json; last log line: {last}" if last else "no metrics.json"), False


def read_run(job_dir: Path) -> Run:
    """Read one job folder (``.hydra/``, ``metrics.json``, ``*.log``) into a :class:`Run`."""
    overrides = _load_yaml(job_dir / ".hydra" / "overrides.yaml")
    overrides = [str(o) for o in overrides] if isinstance(overrides, list) else []
    hydra_conf = _load_yaml(job_dir / ".hydra" / "hydra.yaml")
    runtime = (hydra_conf or {}).get("hydra", {}).get("runtime", {}) if hydra_conf else {}
    choices = {str(k): str(v) for k, v in (runtime.get("choices") or {}).items()}
    run = Run(name=job_dir.name, status="unfinished", overrides=overrides, choices=choices,
              experiment=_experiment(overrides, choices), path=job_dir)
    config = _load_yaml(job_dir / ".hydra" / "config.yaml")
    run.config = config if isinstance(config, dict) else {}
    if refused := _refused_target(run.config, job_dir / ".hydra" / "config.yaml"):
        run.status, run.reason = "failed", refused
        return run
    metrics_path = job_dir / "metrics.json"
    if not metrics_path.is_file():
        run.reason, failed = _log_reason(job_dir)
        run.status = "failed" if failed else "unfinished"
        return run
    try:
        data = json.loads(metrics_path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("top level is not an object")
    except (OSError, ValueError) as err:
        run.status, run.reason = "failed", brief(f"unreadable metrics.json: {err}")
        return run
    if isinstance(data.get("config"), dict):
        run.config = data["config"]
        if refused := _refused_target(run.config, metrics_path):
            run.status, run.reason = "failed", refused
            return run
    run.train_seconds = _train_seconds(data)
    status = str(data.get("status", "")).lower()
    error = data.get("error") or data.get("reason")
    run.metrics = _metrics_from(data)
    if status in _FAILED_STATUS or error:
        reason = brief(str(error or status))
        if error and status in _FAILED_STATUS and status != "failed":
            reason = f"{status}: {reason}"  # e.g. "diverged: stopping at iteration 140: ..."
        run.status, run.reason = "failed", reason
    elif status in ("running", "unfinished", "incomplete"):
        run.status, run.reason = "unfinished", f"metrics.json status {status!r}"
    elif not isinstance(run.metrics.get("AP"), float) or not math.isfinite(run.metrics["AP"]):
        run.status, run.reason = "failed", "metrics.json has no finite AP"
    else:
        run.status = "done"
    if run.status != "done":
        run.metrics = {k: v for k, v in run.metrics.items() if math.isfinite(v)}
    return run


def _refused_target(config: dict[str, Any], path: Path) -> str | None:
    """The one-line refusal of a config whose ``_target_``s are not all allowed
    (:func:`retina.utils.instantiate.check_targets`; a report builds nothing from a run
    folder, but a crafted one is not reported as a result), else None."""
    from retina.errors import CheckpointError
    from retina.utils.instantiate import check_targets

    try:
        check_targets(config, f"{path}: config")
    except CheckpointError as err:
        return str(err)
    return None


def _train_seconds(data: dict[str, Any]) -> float | None:
    """``train_seconds`` of ``metrics.json`` (never file times: a rerun rewrites those)."""
    value = data.get("train_seconds")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return max(0.0, float(value))
    return None


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
    sweep_conf = _load_yaml(multirun_dir / "multirun.yaml")
    runtime = ((sweep_conf or {}).get("hydra") or {}).get("runtime") or {}
    choices = {str(k): str(v) for k, v in (runtime.get("choices") or {}).items()}
    experiment = next((_experiment(job, choices) for job in expected), None)
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

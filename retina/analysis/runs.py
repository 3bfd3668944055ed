"""One job folder of a Hydra sweep read into a :class:`Run` record for ``retina-report``.

A finished job keeps its ``metrics.json``; a failed or unfinished one the reason found in
``metrics.json`` or in the job's log. The sweep as a whole (jobs never started, reference
runs) is :mod:`retina.analysis.multirun`'s.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Run", "brief", "experiment_of", "hydra_choices", "load_yaml", "read_run",
           "split_override"]

_LOG_PREFIX = re.compile(r"^\[[^\]]*\]\[[^\]]*\]\[[A-Z]+\] - ")
_ERROR_LINE = re.compile(r"error|exception|diverg|non-finite|nan loss|killed", re.IGNORECASE)
_FAILED_STATUS = ("failed", "error", "diverged", "crashed", "killed")


@dataclass
class Run:
    """One job of a sweep.

    Attributes:
        name: the job's folder name (its index in the sweep).
        status: ``"done"``, ``"failed"``, ``"running"`` (another process holds the folder's
            lock), ``"unfinished"`` or ``"not started"``.
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


def load_yaml(path: Path) -> Any:
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


def experiment_of(overrides: list[str], choices: dict[str, str]) -> str | None:
    """The ``+experiment=NAME`` of a job's overrides, else its ``experiment`` group choice."""
    for text in overrides:
        key, value = split_override(text)
        if key == "experiment":
            return value
    return choices.get("experiment")


def hydra_choices(conf: Any) -> dict[str, str]:
    """Hydra's config-group choices (``hydra.runtime.choices``) of a loaded ``hydra.yaml`` or
    ``multirun.yaml``; ``{}`` when it has none."""
    hydra_conf = conf.get("hydra") if isinstance(conf, dict) else None
    runtime = hydra_conf.get("runtime") if isinstance(hydra_conf, dict) else None
    choices = runtime.get("choices") if isinstance(runtime, dict) else None
    return {str(k): str(v) for k, v in choices.items()} if isinstance(choices, dict) else {}


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
    overrides = load_yaml(job_dir / ".hydra" / "overrides.yaml")
    overrides = [str(o) for o in overrides] if isinstance(overrides, list) else []
    choices = hydra_choices(load_yaml(job_dir / ".hydra" / "hydra.yaml"))
    run = Run(name=job_dir.name, status="unfinished", overrides=overrides, choices=choices,
              experiment=experiment_of(overrides, choices), path=job_dir)
    config = load_yaml(job_dir / ".hydra" / "config.yaml")
    run.config = config if isinstance(config, dict) else {}
    if refused := _refused_target(run.config, job_dir / ".hydra" / "config.yaml"):
        run.status, run.reason = "failed", refused
        return run
    metrics_path = job_dir / "metrics.json"
    if not metrics_path.is_file():
        from retina.engine.rundir import lock_holder  # imports torch: only for such a job

        if (pid := lock_holder(job_dir)) is not None:
            run.status, run.reason = "running", f"pid {pid}"
            return run
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

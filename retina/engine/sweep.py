"""Resumable sweeps: what a job of ``retina-train -m`` finds in its folder when a sweep is
rerun with the same ``hydra.sweep.dir``.

- ``finished``: ``metrics.json`` records the job's outcome (a finite AP, or ``diverged``); the
  job is skipped and its files stay untouched. A job that ``failed`` on its input is not an
  outcome: it runs again (resumed when it has checkpoints), e.g. after the data was fixed.
- ``resume``: no outcome yet, but checkpoints: the job continues from its newest valid
  checkpoint (``train.resume=true``; bit-exact with ``train.deterministic=true``).
- ``fresh``: neither; the job starts from iteration 0.

A finished job whose recorded config differs from the rerun's anywhere (data included) but in
:data:`IGNORED_KEYS` is an error, not a skip: the sweep folder belongs to another sweep. So is
an interrupted job whose starting config (``started``) differs. Keys the recorded config lacks
(added by a later version, at their defaults) are not compared. ``retina-train`` checks every
job this way before Hydra writes anything into the sweep folder
(:mod:`retina.cli.callbacks`), and each job again when it starts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retina.engine.checkpoint import LAST_NAME, list_checkpoints
from retina.errors import ConfigError

__all__ = ["IGNORED_KEYS", "JobState", "job_state"]

IGNORED_KEYS: tuple[str, ...] = (
    "paths", "train.resume", "train.resume_reset", "train.num_workers", "train.log_period",
    "train.checkpoint_period", "train.keep_checkpoints",
)
"""Config keys a rerun may change without making a job another job: where files go, whether
it resumes, how fast it loads or logs, and how often it saves. Every other key (data
included) must agree."""


@dataclass
class JobState:
    """What a rerun does with one job: ``kind`` is ``"finished"``, ``"resume"`` or ``"fresh"``;
    ``metrics`` is the finished job's ``metrics.json``."""

    kind: str
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def ap(self) -> float | None:
        value = self.metrics.get("AP")
        ok = isinstance(value, int | float) and math.isfinite(value)
        return float(value) if ok else None


def _first_difference(old: Any, new: Any, key: str) -> tuple[str, Any, Any] | None:
    """The first leaf of ``old`` that ``new`` does not share, as ``(dotted key, old, new)``.
    Keys that ``old`` lacks are not compared: a later version of retina may add config keys
    (with their defaults), and a job finished before that is still the same job."""
    if isinstance(old, dict) and isinstance(new, dict):
        for name, value in old.items():
            found = _first_difference(value, new.get(name), f"{key}.{name}")
            if found is not None:
                return found
        return None
    return None if old == new else (key, old, new)


def _without_ignored(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` without :data:`IGNORED_KEYS`."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for dotted in IGNORED_KEYS:
        head, _, leaf = dotted.partition(".")
        if not leaf:
            out.pop(head, None)
        elif isinstance(out.get(head), dict):
            out[head].pop(leaf, None)
    return out


def _check_same_config(source: Path, recorded: Any, config: dict[str, Any]) -> None:
    if not isinstance(recorded, dict):
        return  # an old or hand-written metrics.json: nothing to compare
    for key, old in _without_ignored(recorded).items():
        found = _first_difference(old, config.get(key), key)
        if found is not None:
            where, was, now = found
            raise ConfigError(
                where,
                f"{source} was written with {where}={json.dumps(was, default=str)[:80]}, "
                f"this sweep has {json.dumps(now, default=str)[:80]}: the folder belongs to "
                "another sweep (use a new hydra.sweep.dir)",
            )


def job_state(
    run_dir: str | Path, config: dict[str, Any], started: dict[str, Any] | None = None
) -> JobState:
    """Decide whether the job in ``run_dir`` is finished, to be resumed, or fresh.

    Args:
        run_dir: the job's folder (``hydra.sweep.dir/N``).
        config: the job's resolved config now (compared with the finished job's).
        started: the resolved config the folder's job started with (its
            ``.hydra/config.yaml``), compared with ``config`` when the job is to be resumed;
            None: not compared (the resumed checkpoint's own checks still apply).

    Raises:
        ConfigError: the folder's finished or interrupted job ran with another config.
    """
    run_dir = Path(run_dir)
    try:
        data = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict):
        status = str(data.get("status", "")).lower()
        ap = data.get("AP")
        finite = isinstance(ap, int | float) and math.isfinite(ap)
        if status == "diverged" or (not status and finite):
            _check_same_config(run_dir / "metrics.json", data.get("config"), config)
            return JobState("finished", data)
    ckpt_dir = run_dir / "checkpoints"
    if list_checkpoints(ckpt_dir) or (ckpt_dir / LAST_NAME).is_file():
        _check_same_config(run_dir / ".hydra" / "config.yaml", started, config)
        return JobState("resume")
    return JobState("fresh")

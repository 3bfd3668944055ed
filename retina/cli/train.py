"""``retina-train``: train a RetinaNet from ``configs/train.yaml`` and evaluate it.

    retina-train                                   # CPU demo: tiny model, shapes data
    retina-train model=retinanet_r50_fpn data=coco schedule=1x
    retina-train hydra.run.dir=outputs/run1 train.resume=true   # continue a run
    torchrun --nproc_per_node=2 -m retina.cli.train hydra.run.dir=outputs/ddp
    retina-train -m +experiment=fl_vs_ce hydra.sweep.dir=outputs/study   # rerun: resumes

A sweep (``-m``) rerun with the same ``hydra.sweep.dir`` skips its finished jobs and resumes
its interrupted ones from their newest checkpoint (:mod:`retina.engine.sweep`).

The run directory holds ``checkpoints/`` (``last.pt`` = newest), ``tensorboard/``,
``coco_results.json`` and ``metrics.json`` (final COCO metrics in percent + resolved config).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from retina.cli import exit_on_interrupt

with exit_on_interrupt("retina-train"):  # Ctrl-C while loading: one line
    import hydra
    from omegaconf import DictConfig, OmegaConf

    from retina.cli import common as _common
    from retina.cli.common import exit_on_user_error, run_cli
    from retina.config import CONFIG_DIR, validate_config
    from retina.errors import NonFiniteLossError, RunDirError, one_line, user_errors
    from retina.utils.device import device_type

log = logging.getLogger("retina.train")


def train(cfg: DictConfig, run_dir: str | Path, dir_key: str = "hydra.run.dir") -> dict[str, Any]:
    """Validate ``cfg``, build everything, train (resuming if asked) and evaluate.

    The run directory is locked for this process, and a run that does not resume refuses a
    directory holding checkpoints (:mod:`retina.engine.rundir`; ``dir_key`` names it).

    Returns:
        the final COCO metrics in percent (``AP``, ``AP50``, ..., ``per_category``).
    """
    validate_config(cfg)
    from retina.engine import distributed, rundir
    from retina.engine.build import build_training_run
    from retina.engine.evaluation import format_metrics_table
    from retina.engine.logging import write_metrics_json

    dist = distributed.init_distributed(device_type(str(cfg.train.device), "train.device"))
    try:
        # every rank uses rank 0's directory (Hydra's timestamps may differ between processes)
        run_dir = Path(str(distributed.broadcast_object(str(run_dir))))
        if dist.is_main:
            rundir.lock_run_dir(run_dir, dir_key)
        if not cfg.train.resume:
            rundir.require_fresh_run_dir(run_dir, dir_key)
        run = build_training_run(cfg, run_dir, dist)
        metrics, seconds = run.train()
        if dist.is_main:
            write_metrics_json(run_dir / "metrics.json", metrics, run.config,
                               iteration=run.trainer.iteration, train_seconds=round(seconds, 1),
                               focal_backend=run.focal_backend)  # fmt: skip
            print(format_metrics_table(metrics), flush=True)
            log.info("wrote %s", run_dir / "metrics.json")
        return metrics
    finally:
        rundir.release_run_dir(run_dir)
        distributed.cleanup()


_failed_jobs: list[str] = []


def _record_failed_job(cfg: DictConfig, run_dir: Path, job: str, exc: BaseException) -> None:
    """One job of a sweep failed on bad input or diverged: say so on stderr and in the job's
    log, and write ``metrics.json`` with ``status`` and ``error`` (``retina-report`` lists the
    job as failed), so that the sweep goes on with its other jobs."""
    from retina.engine.logging import write_metrics_json

    message = one_line(exc)
    status = "diverged" if isinstance(exc, NonFiniteLossError) else "failed"
    log.error("job %s %s: %s", job, status, message)
    sys.stderr.write(f"retina-train: job {job} {status}: {message}\n")
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - an unresolvable config is itself the failure
        config = {}
    if isinstance(exc, RunDirError):  # the folder is another run's: leave it untouched
        _failed_jobs.append(job)
        return
    try:
        write_metrics_json(run_dir / "metrics.json", {}, config, status=status, error=message)
    except Exception as err:  # noqa: BLE001 - the job already failed; keep the sweep going
        log.error("could not write %s: %s", run_dir / "metrics.json", err)
    _failed_jobs.append(job)


def _prepare_sweep_job(cfg: DictConfig, run_dir: Path, job: str) -> float | None | bool:
    """A rerun sweep's job: ``False`` to train (setting ``train.resume`` when the folder holds
    checkpoints of an interrupted run), else the finished job's AP (or None) to skip it."""
    from retina.engine.sweep import job_state

    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - an unresolvable config fails in train() with its key
        config = {}
    state = job_state(run_dir, config if isinstance(config, dict) else {})
    if state.kind == "finished":
        log.info("job %s: finished, skipped (%s)", job, run_dir / "metrics.json")
        print(f"retina-train: job {job}: finished, skipped", flush=True)
        return state.ap
    if state.kind == "resume" and not cfg.train.resume:
        log.info("job %s: interrupted, resuming from %s", job, run_dir / "checkpoints")
        print(f"retina-train: job {job}: interrupted, resuming", flush=True)
        cfg.train.resume = True
    return False


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _app(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        job = str(hydra_cfg.job.num)
        with exit_on_user_error("retina-train"):
            skipped = _prepare_sweep_job(cfg, run_dir, job)
        if skipped is not False:
            return skipped  # type: ignore[return-value]
    if hydra_cfg.mode == RunMode.MULTIRUN and not _common._traceback_requested:
        try:
            metrics = train(cfg, run_dir, "hydra.sweep.dir")
        except user_errors() as exc:
            _record_failed_job(cfg, run_dir, str(hydra_cfg.job.num), exc)
            return None
        return metrics.get("AP")
    with exit_on_user_error("retina-train"):
        metrics = train(cfg, run_dir)
    return metrics.get("AP")  # the objective for Hydra sweepers


def main() -> None:
    """Console entry point ``retina-train``. A sweep (``-m``) runs all of its jobs even when
    some fail, then exits with status 1 if any did."""
    run_cli(_app, "retina-train")
    if _failed_jobs:
        sys.stderr.write(
            f"retina-train: {len(_failed_jobs)} job(s) of the sweep failed: "
            f"{', '.join(_failed_jobs)} (see each job's metrics.json)\n"
        )
        sys.exit(1)


if __name__ == "__main__":
    main()

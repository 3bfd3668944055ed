"""Train torchvision's own RetinaNet on a retina config: the reference row beside retina's.

    python scripts/train_torchvision.py RUN_DIR [retina overrides ...]
    python scripts/train_torchvision.py outputs/study/shapes_short/torchvision/fl_0 \\
        +experiment=fl_vs_ce ablation/fl_vs_ce=fl train.seed=0 study.lr.fl=0.04

The overrides compose retina's ``train.yaml`` exactly as ``retina-train`` would. The data
(dataset, transforms, loader and its seeded order), the optimizer (SGD, LR scaling, weight
decay groups), the schedule, the gradient clipping, the checkpoints and the COCO evaluation
are retina's own code; only the model is torchvision's
(:func:`retina.modeling.torchvision_reference.build_torchvision_retinanet`: body, FPN width,
P6 input, head depth, prior, anchors, IoU thresholds and gamma/alpha from the config; the
normaliser, box loss, init and postprocessing torchvision's).

RUN_DIR receives ``metrics.json`` (with ``"implementation": "torchvision"``), and
``metrics_history.json`` at ``train.eval_period``, like ``retina-train``. A rerun on a finished
RUN_DIR does nothing; on an interrupted one it resumes from its newest checkpoint. Put
RUN_DIR under a sweep's ``torchvision/`` folder and ``retina-report SWEEP_DIR`` lists it as
a reference row.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from retina.errors import one_line, user_errors

log = logging.getLogger("retina.train_torchvision")
IMPLEMENTATION = "torchvision"
TORCHVISION_LOSS = {"loss_normalizer": "image", "box_loss": "l1", "torchvision_anchors": True}
"""What torchvision's model does, written into the recorded config under retina's keys (the
reference ignores these keys; the report and reruns then see the settings it ran with)."""
NO_SUCH_SETTING = ("smooth_l1_beta", "normalizer_momentum")
"""retina loss keys torchvision's RetinaNet has nothing for (it uses L1 and per-image counts)."""


def check_loss_overrides(overrides: Sequence[str]) -> None:
    """Refuse an override asking the reference for a loss torchvision's RetinaNet does not
    compute (``model.box_loss=giou``); torchvision's own values (``model.box_loss=l1``) pass."""
    from retina.errors import ConfigError

    for item in overrides:
        key, _, text = item.lstrip("+~").partition("=")
        name = key.removeprefix("model.")
        if not key.startswith("model."):
            continue
        if name in NO_SUCH_SETTING:
            raise ConfigError(key, f"{text}: torchvision's RetinaNet has no such setting (its "
                              "box loss is L1, its normaliser each image's foreground count)")
        if name in TORCHVISION_LOSS and yaml.safe_load(text) != TORCHVISION_LOSS[name]:
            raise ConfigError(key, f"{text}: torchvision's RetinaNet always uses "
                              f"{TORCHVISION_LOSS[name]!r}; leave the key out")


def compose_config(run_dir: Path, overrides: Sequence[str]) -> tuple[DictConfig, dict]:
    """retina's ``train.yaml`` with ``overrides`` (``paths.output_dir`` is ``run_dir``), and
    Hydra's config-group choices (``{"loss": "focal", ...}``, for ``retina-report``)."""
    from hydra import compose, initialize_config_dir

    from retina.config import CONFIG_DIR
    from retina.engine.defaults import register_defaults

    register_defaults()  # configs/model/*.yaml extend it
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.output_dir={run_dir}"],
                      return_hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        cfg.pop("hydra")
    return cfg, {str(k): str(v) for k, v in choices.items() if not str(k).startswith("hydra")}


def train_torchvision(run_dir: Path, overrides: Sequence[str]) -> dict | None:
    """Train (or resume) the torchvision reference in ``run_dir``; ``None`` when it had
    already finished. Returns the final COCO metrics in percent."""
    from retina.config import validate_config
    from retina.engine import rundir
    from retina.engine.build import build_training_run
    from retina.engine.distributed import DistInfo
    from retina.engine.logging import write_metrics_json
    from retina.engine.sweep import job_state
    from retina.modeling.torchvision_reference import (
        build_torchvision_retinanet,
        check_torchvision_config,
    )

    check_loss_overrides(overrides)
    cfg, choices = compose_config(run_dir, overrides)
    validate_config(cfg)
    check_torchvision_config(cfg.model, cfg.loss)  # before anything is written
    replaced = {k: cfg.model.get(k) for k, v in TORCHVISION_LOSS.items() if cfg.model.get(k) != v}
    if replaced:
        log.info("torchvision's loss, not this config's: %s", ", ".join(
            f"model.{k}={TORCHVISION_LOSS[k]} (config: {v})" for k, v in replaced.items()))
    with open_dict(cfg):
        cfg.implementation = IMPLEMENTATION
        cfg.model.update(TORCHVISION_LOSS)
    config = OmegaConf.to_container(cfg, resolve=True)
    state = job_state(run_dir, config)  # type: ignore[arg-type]
    if state.kind == "finished":
        print(f"train_torchvision: {run_dir}: finished, skipped", flush=True)
        return None
    cfg.train.resume = cfg.train.resume or state.kind == "resume"
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.lock_run_dir(run_dir, "RUN_DIR")
    try:
        if not cfg.train.resume:
            rundir.require_fresh_run_dir(run_dir, "RUN_DIR")
        hydra_dir = run_dir / ".hydra"  # what retina-report reads a job's settings from
        hydra_dir.mkdir(exist_ok=True)
        (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
        (hydra_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        runtime = {"hydra": {"runtime": {"choices": choices}}}
        (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump(runtime, sort_keys=False))
        dist = DistInfo(rank=0, world_size=1, local_rank=0)
        run = build_training_run(cfg, run_dir, dist, model_factory=build_torchvision_retinanet)
        metrics, seconds = run.train()
        write_metrics_json(run_dir / "metrics.json", metrics, run.config,
                           iteration=run.trainer.iteration, implementation=IMPLEMENTATION,
                           train_seconds=round(seconds, 1))
        return metrics
    finally:
        rundir.release_run_dir(run_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """``train_torchvision.py RUN_DIR [OVERRIDES...]``; exit 1 with one line on bad input."""
    parser = argparse.ArgumentParser(prog="train_torchvision.py", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="the run's folder (created)")
    parser.add_argument("overrides", nargs="*", help="retina-train overrides (key=value)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    try:
        metrics = train_torchvision(args.run_dir, args.overrides)
    except user_errors() as exc:
        print(f"train_torchvision.py: error: {one_line(exc)}", file=sys.stderr)
        return 1
    if metrics is not None:
        print(f"train_torchvision: {args.run_dir}: AP {metrics.get('AP', float('nan')):.1f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

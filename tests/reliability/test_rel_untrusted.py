"""Untrusted checkpoint files: they load with ``weights_only=True``, so a pickle carrying
code is refused with a clear message and its payload never runs, through the library,
``retina-eval`` and ``train.resume``; a crafted config cannot point ``_target_`` outside the
``retina`` package."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from relhelp import CliServer, train_args

from retina.engine.checkpoint import (
    CheckpointError,
    build_model_from_checkpoint,
    load_checkpoint,
)


class Payload:
    """Unpickling this runs a shell command (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """A checkpoint-looking file with a code payload; returns (file, marker)."""
    marker = tmp_path / f"pwned_{kind}"
    state = {"model": {"w": torch.zeros(2)}, "iteration": 9, "evil": Payload(marker)}
    path = tmp_path / f"{kind}.pt"
    if kind == "torch_save":
        torch.save(state, path)
    elif kind == "plain_pickle":
        path.write_bytes(pickle.dumps(state, protocol=2))
    else:  # the payload is the whole file
        torch.save(Payload(marker), path)
    return path, marker


def test_the_payload_is_real(tmp_path: Path) -> None:
    """Control: unpickled without weights_only, the file does run its command."""
    path, marker = _malicious(tmp_path, "torch_save")
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["torch_save", "plain_pickle", "bare_payload"])
def test_load_checkpoint_refuses_code(kind: str, tmp_path: Path) -> None:
    path, marker = _malicious(tmp_path, kind)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "weights_only" in message and "\n" not in message
    assert not marker.exists(), "the payload ran"


def test_eval_refuses_code(cli: CliServer, tmp_path: Path) -> None:
    path, marker = _malicious(tmp_path, "torch_save")
    run_dir = tmp_path / "eval"
    result = cli.run(
        "retina-eval", [f"checkpoint={path}", f"hydra.run.dir={run_dir}"], cwd=tmp_path
    )
    result.assert_clean_error(str(path), "weights_only")
    assert not marker.exists(), "the payload ran"
    assert not (run_dir / "metrics.json").exists()


def test_resume_skips_a_planted_checkpoint(
    cli: CliServer, reference_run: dict, tiny_shapes: Path, tmp_path: Path
) -> None:
    """A malicious file under the newest checkpoint name is skipped (and named), the run
    resumes from the newest genuine checkpoint."""
    run_dir = Path(shutil.copytree(reference_run["dir"], tmp_path / "run"))
    planted, marker = _malicious(tmp_path, "torch_save")
    target = run_dir / "checkpoints" / "model_0000009.pt"
    shutil.copyfile(planted, target)
    args = train_args(tiny_shapes, run_dir, **{"train.resume": "true", "train.max_iter": 5})
    result = cli.run("retina-train", args, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.rc == 0, output[-3000:]
    assert f"skipping unusable checkpoint {target}" in output, output[-3000:]
    assert "(iteration 4)" in output
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize(
    "target",
    [
        "os.system",
        "builtins.exec",
        "retina.engine.checkpoint.os.system",  # a non-retina object reached through retina
        "retina.engine.build.shutil.rmtree",
    ],
)
def test_crafted_config_target_is_refused(target: str, reference_run: dict, tmp_path: Path) -> None:
    """A tensor-only checkpoint whose ``config.model._target_`` names code outside the
    retina package is refused before anything is called."""
    path = reference_run["dir"] / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    marker = tmp_path / "pwned_config"
    state["config"]["model"] = {"_target_": target, "_args_": [f"touch {marker}"]}
    with pytest.raises(CheckpointError, match="refusing _target_") as info:
        build_model_from_checkpoint(state, path)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def _cli_args(prog: str, checkpoint: Path, tiny_shapes: Path, tmp_path: Path) -> list[str]:
    """Arguments of a console script that reads ``checkpoint`` (everything else valid)."""
    if prog == "retina-eval":
        return [f"checkpoint={checkpoint}", f"hydra.run.dir={tmp_path / 'eval'}",
                "eval.device=cpu"]  # fmt: skip
    if prog == "retina-predict":
        return [f"checkpoint={checkpoint}", f"input={tiny_shapes / 'val'}",
                f"output={tmp_path / 'pred'}", "device=cpu",
                f"hydra.run.dir={tmp_path / 'predict'}"]  # fmt: skip
    return ["loss-cdf", f"checkpoint={checkpoint}", f"data.root={tiny_shapes}", "images=1",
            f"out={tmp_path / 'cdf.png'}"]  # fmt: skip


def _one_line(result, prog: str, *needles: str) -> None:
    """Exit 1, no traceback, one error line holding every needle (retina-plot prefixes its
    lines with the figure's name instead of ``error:``)."""
    if prog != "retina-plot":
        result.assert_clean_error(*needles)
        return
    assert result.rc == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("retina-plot loss-cdf:")]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), result.stderr[-3000:]


CHECKPOINT_READERS = ["retina-eval", "retina-predict", "retina-plot"]


@pytest.mark.parametrize("prog", CHECKPOINT_READERS)
def test_console_scripts_refuse_pickled_code(
    prog: str, cli: CliServer, tiny_shapes: Path, tmp_path: Path
) -> None:
    path, marker = _malicious(tmp_path, "torch_save")
    result = cli.run(prog, _cli_args(prog, path, tiny_shapes, tmp_path), cwd=tmp_path)
    _one_line(result, prog, str(path), "weights_only")
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("node", ["model", "loss"])
@pytest.mark.parametrize("prog", CHECKPOINT_READERS)
def test_console_scripts_refuse_a_crafted_config_target(
    prog: str, node: str, cli: CliServer, reference_run: dict, tiny_shapes: Path, tmp_path: Path
) -> None:
    """A tensor-only checkpoint whose config points ``_target_`` at ``os.system``: one line
    naming the file and the key, and the command never runs."""
    state = load_checkpoint(reference_run["dir"] / "checkpoints" / "last.pt")
    marker = tmp_path / "pwned_config"
    state["config"][node] = {"_target_": "os.system", "_args_": [f"touch {marker}"]}
    path = tmp_path / "crafted.pt"
    torch.save(state, path)
    result = cli.run(prog, _cli_args(prog, path, tiny_shapes, tmp_path), cwd=tmp_path)
    _one_line(result, prog, str(path), f"config.{node}", "refusing _target_")
    assert not marker.exists(), "the payload ran"


# ---------------------------------------------------------------- nested ``_target_`` payloads
# Hydra instantiates nested ``_target_``s recursively, so a tensor-only checkpoint (or a run
# folder) could name a retina function as the *value* of an argument. The two payloads of
# issue 20: one writes a file, one deletes one. Each case plants both, at its own depth.

WRITE = "retina.utils.io.write_text_atomic"
UNLINK = "retina.engine.checkpoint._unlink_quietly"
NESTED_CASES = {
    "model_args": ("model.pixel_mean", "model.pixel_std"),
    "deeper": ("model.anchor_sizes.deeper", "loss.alpha"),
    "data_and_optim": ("data.val_transforms.min_size", "optim.optimizer.momentum"),
}


def _plant(config: dict, dotted: str, value: dict) -> None:
    node = config
    *parents, last = dotted.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def _cases(default: str) -> list:
    """Every case; in the default suite only ``default`` (each entry point gets another one,
    so that every depth is covered there too), the others under ``-m slow``."""
    return [c if c == default else pytest.param(c, marks=pytest.mark.slow)
            for c in sorted(NESTED_CASES)]


READER_CASES = [
    pytest.param(prog, case, marks=() if case == default else pytest.mark.slow)
    for prog, default in (("retina-eval", "model_args"), ("retina-predict", "deeper"),
                          ("retina-plot", "data_and_optim"), ("retina-stats", "model_args"))
    for case in sorted(NESTED_CASES)
]


def _payloads(config: dict, case: str, tmp_path: Path) -> tuple[Path, Path]:
    """Plant the case's two payloads in ``config``; returns (file it would write, file it
    would delete)."""
    written, victim = tmp_path / "pwned_written", tmp_path / "victim"
    victim.write_text("keep me")
    write_key, unlink_key = NESTED_CASES[case]
    _plant(config, write_key, {"_target_": WRITE, "path": str(written), "text": "pwned"})
    _plant(config, unlink_key, {"_target_": UNLINK, "path": str(victim)})
    return written, victim


def _crafted_checkpoint(reference_run: dict, case: str, tmp_path: Path) -> tuple[Path, Path, Path]:
    state = load_checkpoint(reference_run["dir"] / "checkpoints" / "last.pt")
    written, victim = _payloads(state["config"], case, tmp_path)
    path = tmp_path / "crafted.pt"
    torch.save(state, path)
    return path, written, victim


def _refused(line: str, path: Path | str, case: str) -> None:
    keys = [f"config.{k}" for k in NESTED_CASES[case]]
    assert str(path) in line and "refusing _target_" in line, line
    assert any(f"{k}:" in line for k in keys), (line, keys)


@pytest.mark.parametrize(("prog", "case"), READER_CASES)
def test_checkpoint_readers_refuse_nested_targets(
    prog: str, case: str, cli: CliServer, reference_run: dict, tiny_shapes: Path, tmp_path: Path
) -> None:
    """eval, predict, plot loss-cdf and stats: one line naming the file and the dotted key;
    nothing written, nothing deleted."""
    path, written, victim = _crafted_checkpoint(reference_run, case, tmp_path)
    if prog == "retina-stats":
        args = [f"checkpoint={path}", f"data.root={tiny_shapes}", "images=1",
                f"out={tmp_path / 'stats'}"]  # fmt: skip
    else:
        args = _cli_args(prog, path, tiny_shapes, tmp_path)
    result = cli.run(prog, args, cwd=tmp_path)
    if prog == "retina-plot":
        _one_line(result, prog, str(path), "refusing _target_")
        line = result.stderr
    else:
        line = result.assert_clean_error(str(path), "refusing _target_")
    _refused(line, path, case)
    assert not written.exists(), "the write payload ran"
    assert victim.exists(), "the delete payload ran"


@pytest.mark.parametrize("case", _cases("deeper"))
def test_resume_refuses_nested_targets(
    case: str, cli: CliServer, reference_run: dict, tiny_shapes: Path, tmp_path: Path
) -> None:
    """``train.resume=true`` on a run folder whose checkpoints carry the payloads."""
    run_dir = Path(shutil.copytree(reference_run["dir"], tmp_path / "run"))
    for ckpt in (run_dir / "checkpoints").glob("*.pt"):
        state = load_checkpoint(ckpt)
        written, victim = _payloads(state["config"], case, tmp_path)
        torch.save(state, ckpt)
    args = train_args(tiny_shapes, run_dir, **{"train.resume": "true", "train.max_iter": 5})
    line = cli.run("retina-train", args, cwd=tmp_path).assert_clean_error("refusing _target_")
    _refused(line, run_dir / "checkpoints", case)
    assert not written.exists(), "the write payload ran"
    assert victim.exists(), "the delete payload ran"


@pytest.mark.parametrize("case", _cases("data_and_optim"))
def test_report_refuses_a_run_folder_with_nested_targets(
    case: str, cli: CliServer, reference_run: dict, tmp_path: Path
) -> None:
    """retina-report (table and figures) over a sweep whose job 1 carries the payloads in
    ``.hydra/config.yaml``: that job is reported as failed with the one-line refusal, job 0
    as done, and neither payload runs."""
    import yaml

    sweep = tmp_path / "sweep"
    for job in ("0", "1"):
        shutil.copytree(reference_run["dir"], sweep / job)
    config_file = sweep / "1" / ".hydra" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    written, victim = _payloads(config, case, tmp_path)
    config_file.write_text(yaml.safe_dump(config))
    result = cli.run("retina-report", [str(sweep)], cwd=tmp_path)
    assert result.rc == 0, result.stderr[-3000:]
    table = (sweep / "table.csv").read_text()
    refused = [ln for ln in table.splitlines() if "refusing _target_" in ln]
    assert len(refused) == 1, table
    _refused(refused[0], config_file, case)
    assert not written.exists(), "the write payload ran"
    assert victim.exists(), "the delete payload ran"

"""Helpers of the reliability tests: tiny training overrides, the fork-server client that runs
``retina-train`` / ``retina-eval`` / ``retina-check-data`` as real child processes (see
``cli_server.py``), checkpoint comparisons and the hypothesis budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from retina.engine.checkpoint import _TMP_PREFIX, LAST_NAME, list_checkpoints

# Examples per hypothesis test: modest by default; e.g. RELIABILITY_FUZZ_EXAMPLES=5000 for a
# long fuzzing session.
FUZZ_EXAMPLES = int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "40"))

SERVER = Path(__file__).with_name("cli_server.py")
IMAGE_SIZE = 64


# Everything a bit-exact continuation depends on (the config differs: it holds the run dir).
COMPARED = ("model", "optimizer", "scheduler", "scaler", "iteration", "rng", "data_position")


def train_args(data_root: Path, run_dir: Path, **overrides: Any) -> list[str]:
    """``retina-train`` overrides for a seconds-long deterministic CPU run of the tiny model
    on 64 px images (4 iterations of 2 images, a checkpoint every iteration)."""
    args: dict[str, Any] = {
        "data.root": str(data_root),
        "data.train_transforms.min_size": IMAGE_SIZE,
        "data.train_transforms.max_size": IMAGE_SIZE,
        "data.val_transforms.min_size": IMAGE_SIZE,
        "data.val_transforms.max_size": IMAGE_SIZE,
        "model.fpn_channels": 16,
        "model.num_convs": 1,
        "model.freeze_at": 0,
        "train.max_iter": 4,
        "train.batch_size": 2,
        "train.eval_batch_size": 2,
        "train.checkpoint_period": 1,
        "train.keep_checkpoints": 3,
        "train.num_workers": 0,
        "train.deterministic": "true",
        "train.device": "cpu",
        "train.vis_images": 0,
        "train.log_period": 1,
        "schedule.steps": "[3]",
        "schedule.warmup_iters": 1,
        "hydra.run.dir": str(run_dir),
    }
    args.update(overrides)
    return [f"{k}={v}" for k, v in args.items()]


@dataclass
class Result:
    """What a console-script run returned."""

    rc: int
    killed: bool
    timed_out: bool
    seconds: float
    stdout: str
    stderr: str

    def assert_clean_error(self, *needles: str) -> str:
        """Exit status 1, no traceback, and one ``<prog>: error: ...`` line containing every
        needle; returns that line."""
        assert not self.timed_out, self.stderr[-2000:]
        assert self.rc == 1, f"rc={self.rc}\n{self.stderr[-3000:]}"
        assert "Traceback" not in self.stderr, self.stderr[-3000:]
        lines = [ln for ln in self.stderr.splitlines() if ": error: " in ln]
        assert len(lines) == 1, self.stderr[-3000:]
        for needle in needles:
            assert needle in lines[0], lines[0]
        return lines[0]


class CliServer:
    """Client of ``cli_server.py``; one server per test session."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.count = 0
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        env.pop("HYDRA_FULL_ERROR", None)
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        if not ready.strip():
            raise RuntimeError("cli_server.py did not start")

    def run(
        self,
        prog: str,
        argv: list[str],
        *,
        cwd: Path,
        faults: dict[str, Any] | None = None,
        kill: dict[str, Any] | None = None,
        timeout: float = 240.0,
    ) -> Result:
        self.count += 1
        request = {
            "prog": prog,
            "argv": [str(a) for a in argv],
            "cwd": str(cwd),
            "faults": faults or {},
            "kill": kill,
            "timeout": timeout,
            "log": str(self.log_dir / f"run{self.count:04d}"),
        }
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError("cli_server.py died")
        return Result(**json.loads(reply))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ------------------------------------------------------------------ checkpoint helpers


def checkpoint_files(directory: Path) -> list[Path]:
    """Every file under a checkpoint name (numbered ones and ``last.pt``)."""
    files = [p for _, p in list_checkpoints(directory)]
    if (directory / LAST_NAME).is_file():
        files.append(directory / LAST_NAME)
    return files


def temp_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"{_TMP_PREFIX}*")) if directory.is_dir() else []


def load_raw(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def tensors_equal(a: Any, b: Any, where: str = "") -> list[str]:
    """Paths (``model.head.weight``) where two nested checkpoint structures differ bitwise."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and bool(torch.equal(a, b) or (a.is_floating_point() and _nan_equal(a, b)))
        )
        return [] if same else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where} keys {sorted(map(str, set(a) ^ set(b)))}"]
        return [d for k in a for d in tensors_equal(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where} length"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in tensors_equal(x, y, f"{where}[{i}]")
        ]
    return [] if a == b else [where]


def _nan_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(
        torch.equal(torch.isnan(a), torch.isnan(b))
        and torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))
    )


def final_state(run_dir: Path) -> dict:
    """The parts of ``run_dir``'s ``last.pt`` that must match between runs."""
    state = load_raw(run_dir / "checkpoints" / LAST_NAME)
    return {k: state.get(k) for k in COMPARED}

"""A fork server that runs the console scripts as real, killable child processes.

Importing torch, torchvision, Hydra and albumentations costs tens of seconds on the shared
test machine, far more than the tiny training runs under test. This script (run as its own
process by ``conftest.py``, never imported by pytest) pays for the imports once and then forks
one child per request. Each child is a separate process that runs the entry point's ``main()``
exactly as the console script does, with its own stdout/stderr files, exit status and
signals: it can be SIGKILLed at any moment, and an exception that escapes ``main()`` prints
the interpreter's traceback, as it would from the shell.

Protocol: one JSON request per line on stdin, one JSON reply per line on stdout.
Request keys: ``prog`` (``retina-train`` | ``retina-eval`` | ``retina-check-data``),
``argv`` (list of str), ``cwd``, ``env`` (dict), ``faults`` (dict, see :func:`apply_faults`),
``timeout`` (s), ``kill`` (``null``, ``{"after": s}`` or ``{"marker": path, "delay": s}``:
SIGKILL ``delay`` s after ``path`` appears; ``"signal": "TERM"`` sends that signal instead of
SIGKILL), ``log`` (path prefix for ``.out``/``.err``).
Reply: ``{"rc", "killed", "timed_out", "seconds", "stdout", "stderr"}``; ``rc`` is ``-9``
for a SIGKILLed child.

Fork safety: the parent never runs a torch operator (so no OpenMP pool exists to be
inherited half-initialised) and runs with ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import errno
import gc
import io
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ENTRY_POINTS = {
    "retina-train": ("retina.cli.train", "main"),
    "retina-eval": ("retina.cli.eval", "main"),
    "retina-predict": ("retina.cli.predict", "main"),
    "retina-plot": ("retina.cli.plot", "main"),
    "retina-check-data": ("retina.cli.check_data", "main"),
    "retina-report": ("retina.cli.report", "main"),
    "retina-stats": ("retina.cli.stats", "main"),
}


def preload() -> None:
    """Import everything the entry points import lazily, once, before any fork."""
    import importlib

    for module, _ in ENTRY_POINTS.values():
        importlib.import_module(module)
    for module in (
        "torch", "torchvision", "hydra.utils", "albumentations", "pycocotools.coco",
        "pycocotools.cocoeval", "retina.engine.build", "retina.engine.hooks",
        "retina.engine.loader", "retina.engine.logging", "retina.engine.evaluation",
        "retina.engine.checkpoint", "retina.engine.trainer", "retina.data", "retina.modeling",
        "torch.utils.tensorboard",
    ):  # fmt: skip
        try:
            importlib.import_module(module)
        except ImportError:
            pass


# ------------------------------------------------------------------ faults (child only)


class _DiskFullFile:
    """A writable file on a full disk: its first write gets half way, then fails."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def write(self, data: Any) -> int:
        self._handle.write(data[: len(data) // 2])
        self._handle.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self) -> _DiskFullFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def apply_faults(faults: dict[str, Any]) -> None:
    """Monkeypatch this (child) process to inject the requested faults.

    - ``slow_save``: ``{"marker_dir", "chunks", "delay"}``: every ``torch.save`` writes its
      bytes in ``chunks`` pieces with ``delay`` s between them and creates
      ``marker_dir/save_<n>`` after the first piece, so the parent can kill mid-write.
    - ``enospc_save``: ``{"call": n}``: the n-th ``torch.save`` (1-based) writes half its
      bytes, then raises ``OSError(ENOSPC)``.
    - ``enospc_files``: ``{"names": [...]}``: files opened for writing whose base name is in
      ``names`` (or is one of them plus a suffix, e.g. ``metrics.json.tmp``) write half of
      their first chunk, then raise ``OSError(ENOSPC)``.
    - ``nan_loss``: ``{"calls": [i, ...]}``: the i-th training forward (1-based) of the model
      returns NaN losses (still attached to the graph).
    """
    import torch

    real_save = torch.save
    calls = {"save": 0}

    if "slow_save" in faults:
        spec = faults["slow_save"]

        def slow_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            calls["save"] += 1
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            step = max(1, len(data) // int(spec["chunks"]))
            for i, start in enumerate(range(0, len(data), step)):
                f.write(data[start : start + step])
                if i == 0:
                    f.flush()
                    Path(spec["marker_dir"], f"save_{calls['save']}").touch()
                time.sleep(float(spec["delay"]))

        torch.save = slow_save

    if "enospc_save" in faults:
        target = int(faults["enospc_save"]["call"])

        def full_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            calls["save"] += 1
            if calls["save"] != target:
                return real_save(obj, f, *args, **kwargs)
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        torch.save = full_save

    if "enospc_files" in faults:
        import builtins

        names = set(faults["enospc_files"]["names"])
        real_open = builtins.open

        def full_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            handle = real_open(file, mode, *args, **kwargs)
            writing = any(c in mode for c in "wax+")
            base = Path(file).name if isinstance(file, (str, os.PathLike)) else ""
            # the file itself or a temporary sibling (".tmp_<name>.XXXX", "<name>.tmp")
            base = base.removeprefix(".tmp_")
            if writing and any(base == n or base.startswith(n + ".") for n in names):
                return _DiskFullFile(handle)
            return handle

        builtins.open = full_open
        io.open = full_open

    if "nan_loss" in faults:
        from retina.modeling.retinanet import RetinaNet

        bad = {int(i) for i in faults["nan_loss"]["calls"]}
        real_forward = RetinaNet.forward
        count = {"n": 0}

        def nan_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
            out = real_forward(self, *args, **kwargs)
            if self.training:
                count["n"] += 1
                if count["n"] in bad:
                    out = out._replace(
                        losses={k: v * float("nan") for k, v in out.losses.items()})
            return out

        RetinaNet.forward = nan_forward


# ------------------------------------------------------------------ parent side


def _child(request: dict[str, Any], out_path: str, err_path: str) -> None:
    """Runs in the forked child; never returns."""
    code = 1
    try:
        out_fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), line_buffering=True)
        sys.stdin = io.TextIOWrapper(io.BytesIO())
        os.chdir(request["cwd"])
        os.environ.update(request.get("env") or {})
        apply_faults(request.get("faults") or {})
        module, func = ENTRY_POINTS[request["prog"]]
        main = getattr(__import__(module, fromlist=[func]), func)
        sys.argv = [request["prog"], *request["argv"]]
        try:
            result = main()
            code = result if isinstance(result, int) else 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if exc.code is not None and not isinstance(exc.code, int):
                print(exc.code, file=sys.stderr)
    except BaseException:  # what the interpreter would print for an uncaught exception
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _wait(pid: int, request: dict[str, Any], start: float) -> tuple[int, bool, bool]:
    """Wait for the child, killing it as the request says; ``(rc, killed, timed_out)``."""
    kill = request.get("kill") or {}
    deadline = start + float(request.get("timeout", 300))
    kill_at = start + float(kill["after"]) if "after" in kill else None
    marker = Path(kill["marker"]) if "marker" in kill else None
    signum = getattr(signal, f"SIG{kill.get('signal', 'KILL')}")
    killed = timed_out = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            return rc, killed, timed_out
        now = time.monotonic()
        if marker is not None and marker.exists():
            kill_at, marker = now + float(kill.get("delay", 0.0)), None
        if not killed and ((kill_at is not None and now >= kill_at) or now >= deadline):
            timed_out = now >= deadline and not (kill_at is not None and now >= kill_at)
            killed = True
            try:
                os.kill(pid, signum if not timed_out else signal.SIGKILL)
            except ProcessLookupError:
                pass
        elif killed and signum != signal.SIGKILL and now >= deadline:  # it ignored the signal
            timed_out, signum = True, signal.SIGKILL
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def serve() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    preload()
    # Everything imported so far lives as long as the server: out of the garbage collector's
    # reach, a child's collections (automatic, or CocoDetection's after parsing) scan only
    # what the child made, not the whole heap, and touching the heap copies no pages.
    gc.collect()
    gc.freeze()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        prefix = request["log"]
        out_path, err_path = f"{prefix}.out", f"{prefix}.err"
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(request, out_path, err_path)
        rc, killed, timed_out = _wait(pid, request, start)
        reply = {
            "rc": rc,
            "killed": killed,
            "timed_out": timed_out,
            "seconds": round(time.monotonic() - start, 2),
            "stdout": Path(out_path).read_text(errors="replace"),
            "stderr": Path(err_path).read_text(errors="replace"),
        }
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    serve()

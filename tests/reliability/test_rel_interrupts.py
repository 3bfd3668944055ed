"""Ctrl-C is one line in every console script, also while it imports; an interrupted
``retina-make-shapes`` leaves nothing; a folder named like the run's log file is one line
(issue 23)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from relhelp import train_args

REPO = Path(__file__).resolve().parents[2]

# (console script, its module, a module it imports at load time: Ctrl-C arrives there)
LOADING = [
    ("retina-train", "retina.cli.train", "hydra"),
    ("retina-eval", "retina.cli.eval", "hydra"),
    ("retina-stats", "retina.cli.stats", "hydra"),
    ("retina-predict", "retina.cli.predict", "hydra"),
    ("retina-plot", "retina.cli.plot", "retina.analysis.figures"),
    ("retina-report", "retina.cli.report", "retina.analysis.report"),
    ("retina-make-shapes", "retina.cli.make_shapes", "retina.data"),
    ("retina-convert-data", "retina.cli.convert_data", "retina.data"),
    ("retina-check-data", "retina.cli.check_data", "retina.data"),
]

_INTERRUPT_AT = """
import sys

class CtrlC:  # Ctrl-C while {target} is being imported
    def find_spec(self, name, path=None, target=None):
        if name == {target!r}:
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlC())
sys.argv = [{prog!r}]
from {module} import main
main()
"""


@pytest.mark.parametrize(("prog", "module", "target"), LOADING)
def test_ctrl_c_while_loading_is_one_line(prog, module, target, tmp_path):
    code = _INTERRUPT_AT.format(prog=prog, module=module, target=target)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert (result.returncode, result.stderr) == (130, f"{prog}: interrupted\n")


def test_ctrl_c_while_converting_is_one_line(tmp_path, monkeypatch, capsys):
    from retina.cli import convert_data

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert_data, "convert_voc", interrupted)
    with pytest.raises(SystemExit) as info:
        convert_data.main(["voc", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "o")])
    assert info.value.code == 130
    assert capsys.readouterr().err == "retina-convert-data: interrupted\n"
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_checking_is_one_line(tmp_path, monkeypatch, capsys):
    from retina.cli import check_data

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(check_data, "validate_coco", interrupted)
    with pytest.raises(SystemExit) as info:
        check_data.main([str(tmp_path / "ann.json")])
    assert info.value.code == 130
    assert capsys.readouterr().err == "retina-check-data: interrupted\n"


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch, capsys):
    from retina.cli import make_shapes
    from retina.data import shapes

    drawn = []
    render = shapes._render_and_save

    def interrupted_after_three(job):
        if len(drawn) == 3:
            raise KeyboardInterrupt
        drawn.append(job)
        return render(job)

    monkeypatch.setattr(shapes, "_render_and_save", interrupted_after_three)
    out = tmp_path / "data" / "shapes"
    with pytest.raises(SystemExit) as info:
        make_shapes.main(["--out", str(out), "--train", "8", "--size", "64", "--workers", "1"])
    assert info.value.code == 130 and len(drawn) == 3
    assert capsys.readouterr().err == "retina-make-shapes: interrupted\n"
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.slow  # a real process killed mid-generation (its imports take seconds)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_make_shapes_killed_by_a_signal_leaves_nothing(tmp_path, sig):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "data" / "shapes"
    proc = subprocess.Popen(
        [sys.executable, "-m", "retina.cli.make_shapes", "--out", str(out), "--train", "3000",
         "--size", "64", "--workers", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if len(list(tmp_path.glob("data/.shapes.tmp*/train/*.png"))) > 20:
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    name = {signal.SIGTERM: "terminated", signal.SIGINT: "interrupted"}[sig]
    assert (proc.returncode, err) == (128 + sig, f"retina-make-shapes: {name}\n")
    assert list((tmp_path / "data").iterdir()) == []


@pytest.mark.parametrize("prog", ["retina-train", "retina-eval"])
def test_a_folder_named_like_the_log_file(cli, tiny_shapes, reference_run, tmp_path, prog):
    run = tmp_path / "run"
    log = run / f"{prog.removeprefix('retina-')}.log"
    log.mkdir(parents=True)
    argv = (train_args(tiny_shapes, run) if prog == "retina-train" else
            [f"checkpoint={reference_run['dir'] / 'checkpoints' / 'last.pt'}",
             f"hydra.run.dir={run}"])  # fmt: skip
    cli.run(prog, argv, cwd=tmp_path).assert_clean_error(str(log), "Is a directory")

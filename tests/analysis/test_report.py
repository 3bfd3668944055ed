"""retina-report over a fabricated multirun folder, and the paper's Table 1 data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from retina.analysis.axes import run_axes
from retina.analysis.heatmap import heatmap_axes
from retina.analysis.multirun import collect_runs, expected_jobs
from retina.analysis.paper import TABLE1, paper_rows
from retina.analysis.report import write_report
from retina.analysis.runs import brief
from retina.analysis.table import build_table
from retina.analysis.table_format import format_markdown
from retina.cli.report import main

EXPERIMENT = "table1b_gamma_alpha"
GRID = [(g, a) for g in (0.0, 2.0, 5.0) for a in (0.25, 0.75)]  # sweeper order: alpha fastest


def _write_yaml(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def _job(root: Path, index: int, gamma: float, alpha: float) -> Path:
    job = root / str(index)
    overrides = [f"loss.gamma={gamma:g}", f"loss.alpha={alpha:g}", f"+experiment={EXPERIMENT}"]
    _write_yaml(job / ".hydra" / "overrides.yaml", overrides)
    choices = {"loss": "focal", "model": "retinanet", "experiment": EXPERIMENT}
    _write_yaml(job / ".hydra" / "hydra.yaml", {"hydra": {"runtime": {"choices": choices}}})
    loss = {"_target_": "retina.modeling.losses.FocalLoss", "gamma": gamma, "alpha": alpha}
    config = {"loss": loss,
              "model": {"num_scales": 3, "aspect_ratios": [0.5, 1.0, 2.0], "prior_prob": 0.01},
              "paths": {"output_dir": "${hydra:runtime.output_dir}"}}
    _write_yaml(job / ".hydra" / "config.yaml", config)
    (job / "train.log").write_text("[2026-11-26 10:00:00,000][retina][INFO] - iter 1\n")
    return job


@pytest.fixture
def multirun(tmp_path: Path) -> Path:
    """A 3 x 2 gamma/alpha sweep: four finished jobs, one diverged, one never started."""
    root = tmp_path / "multirun"
    params = {"loss.gamma": "0,2,5", "loss.alpha": "0.25,0.75"}
    sweep = {"hydra": {"sweeper": {"params": params},
                       "overrides": {"task": [f"+experiment={EXPERIMENT}"]},
                       "runtime": {"choices": {"loss": "focal", "experiment": EXPERIMENT}}}}
    _write_yaml(root / "multirun.yaml", sweep)
    aps = {0: 10.0, 1: 20.0, 2: 30.5, 3: 25.0}
    for index, (gamma, alpha) in enumerate(GRID[:5]):
        job = _job(root, index, gamma, alpha)
        if index in aps:
            config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
            config["paths"]["output_dir"] = str(job)
            metrics = {"AP": aps[index], "AP50": 40.0 + index, "AP75": aps[index] - 1,
                       "APs": 1.0, "APm": 2.0, "APl": 3.0, "train_seconds": 60.0 + 10 * index,
                       "config": config}
            (job / "metrics.json").write_text(json.dumps(metrics))
    (root / "4" / "train.log").write_text(
        "[2026-11-26 10:00:00,000][retina][INFO] - iter 1\n"
        "[2026-11-26 10:00:01,000][retina][ERROR] - non-finite loss at iteration 2\n"
    )
    return root


def test_paper_table1_matches_reference():
    assert [r.ap for r in paper_rows("a")] == [0.0, 10.8, 30.2, 31.1, 30.8, 28.7, 25.1]
    b = {(r.setting["gamma"], r.setting["alpha"]): r.metrics() for r in paper_rows("b")}
    assert b[(2.0, 0.25)] == {"AP": 34.0, "AP50": 52.5, "AP75": 36.5}
    assert b[(0.5, 0.5)] == {"AP": 32.9, "AP50": 51.7, "AP75": 35.2}
    assert [r.ap for r in paper_rows("c")] == [30.3, 31.9, 31.8, 32.4, 34.2, 34.0, 33.8]
    d = paper_rows("d")
    assert [r.ap for r in d if r.setting["method"] == "FL"] == [36.0]
    assert max(r.ap for r in d if r.setting["method"] != "FL") == 32.8
    assert set(TABLE1) == {"a", "b", "c", "d"}
    assert [r.metrics() for r in d if r.setting["method"] == "OHEM 1:3"][-1] == {
        "AP": 24.0, "AP50": 35.5, "AP75": 25.8}  # arXiv v2
    with pytest.raises(ValueError, match="paper block"):
        paper_rows("e")


def test_expected_jobs_follow_the_basic_sweeper(multirun: Path):
    jobs = expected_jobs(multirun)
    assert len(jobs) == 6
    assert jobs[1] == ["loss.gamma=0", "loss.alpha=0.75", "+experiment=table1b_gamma_alpha"]


def test_collect_runs_keeps_failed_and_missing_jobs(multirun: Path):
    runs = collect_runs(multirun)
    assert [r.status for r in runs] == ["done"] * 4 + ["failed", "not started"]
    assert runs[4].reason == "non-finite loss at iteration 2"
    assert run_axes(runs[5]) == {"gamma": 5.0, "alpha": 0.75, "loss": "focal"}
    assert runs[2].metrics["AP"] == 30.5 and runs[2].train_seconds == 80.0


def test_table_layout_bold_and_paper_column(multirun: Path):
    table = build_table(collect_runs(multirun))
    assert table.block == "b" and table.columns == ["gamma", "alpha"]
    assert heatmap_axes(table) == ("gamma", "alpha")
    assert [sorted(r.bold) for r in table.rows][2] == ["AP", "AP75"]
    assert table.rows[3].bold == {"AP50"}
    assert table.rows[2].paper.ap == 34.0 and table.rows[4].paper.ap == 32.2
    text = format_markdown(table)
    assert "| 2 | 0.25 | **30.5** | 42.0 | **29.5** | reference | 34.0 / 52.5 / 36.5 |" in text
    assert "| 0 | 0.25 | 10.0 | 40.0 | 9.0 | -20.5 (CI n/a) | " in text  # one seed: no interval
    assert "failed: non-finite loss at iteration 2" in text
    assert "| 5 | 0.75 | – | – | – | – |  | – | not started |" in text


def test_time_is_train_seconds_not_file_times(multirun: Path):
    """The time comes from metrics.json's train_seconds (a rerun rewrites file times); a job
    without it (failed, not started) has none."""
    write_report(multirun)
    text = (multirun / "table.md").read_text()
    assert "6 jobs: 4 done, 1 failed, 1 not started; total training time 5m00s." in text
    assert "| -20.5 (CI n/a) |  | 1m00s | done |" in text
    assert "| reference | 34.0 / 52.5 / 36.5 | 1m20s | done |" in text
    assert "| – | failed: non-finite loss at iteration 2 |" in text
    rows = list(csv.DictReader((multirun / "table.csv").open()))
    assert [r["train_seconds"] for r in rows] == ["60.0", "70.0", "80.0", "90.0", "", ""]


def test_cli_writes_table_csv_and_heatmap(multirun: Path, capsys):
    assert main([str(multirun)]) == 0
    assert "**30.5**" in (multirun / "table.md").read_text()
    rows = list(csv.DictReader((multirun / "table.csv").open()))
    assert [r["status"] for r in rows] == ["done"] * 4 + ["failed", "not started"]
    assert rows[0]["APl"] == "3.0" and rows[2]["paper_AP"] == "34.0"
    assert (multirun / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out


def test_unreadable_metrics_and_single_run(tmp_path: Path):
    job = _job(tmp_path, 0, 2.0, 0.25)
    (job / "metrics.json").write_text("{not json")
    runs = collect_runs(job)
    assert runs[0].status == "failed" and "unreadable metrics.json" in runs[0].reason
    (job / "metrics.json").write_text(json.dumps({"status": "diverged", "AP": float("nan")}))
    table = write_report(job)
    assert table.rows[0].run.status == "failed" and (job / "heatmap.png").is_file()


def test_cli_errors_are_one_line(tmp_path: Path, capsys):
    assert main([str(tmp_path / "missing")]) == 1
    assert main([str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no such directory" in err[0] and "no runs found" in err[1]
    assert main([]) == 2


def test_failure_reason_keeps_the_cause_and_the_status_word(tmp_path: Path):
    job = _job(tmp_path, 0, 2.0, 0.25)
    error = (
        "stopping at iteration 140: 5 non-finite losses/gradients in a row "
        "(train.max_nonfinite=5); the last good checkpoint is kept. Lower the LR "
        "(optim.base_lr) or set train.clip_grad_norm."
    )
    (job / "metrics.json").write_text(json.dumps({"status": "diverged", "error": error}))
    run = collect_runs(job)[0]
    assert run.status == "failed"
    assert run.reason == (
        "diverged: stopping at iteration 140: 5 non-finite losses/gradients in a row "
        "(train.max_nonfinite=5)"
    )


def test_brief_cuts_long_text_at_a_word():
    text = "word " * 60
    out = brief(text, limit=40)
    assert len(out) <= 40 and out.endswith("word…")
    assert brief("cause; advice") == "cause"

"""retina-report over hand-written seed sweeps: grouping, means, standard deviations,
Welch intervals against the reference row, and curves.png."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from retina.analysis.intervals import student_t_quantile
from retina.analysis.multirun import collect_runs
from retina.analysis.table import build_table
from retina.analysis.table_format import format_markdown
from retina.cli.report import main

ROWS = {"g2_a25": (2.0, 0.25), "g0_a75": (0.0, 0.75), "g0_a50": (0.0, 0.5)}
AP = {"g2_a25": [70.0, 72.0, 74.0], "g0_a75": [77.0, 78.0, 79.0], "g0_a50": [71.0, 73.0, 75.5]}


def _write_yaml(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """3 losses x 3 seeds (seed varies fastest), each with a metrics history."""
    root = tmp_path / "sweep"
    _write_yaml(root / "multirun.yaml", {"hydra": {
        "sweeper": {"params": {"ablation/fl_vs_ce": ",".join(ROWS), "train.seed": "0,1,2"}},
        "overrides": {"task": ["+experiment=fl_vs_ce"]}}})
    job = 0
    for name, (gamma, alpha) in ROWS.items():
        for seed in range(3):
            d = root / str(job)
            _write_yaml(d / ".hydra" / "overrides.yaml", [
                f"ablation/fl_vs_ce={name}", f"train.seed={seed}", "+experiment=fl_vs_ce"])
            config = {"loss": {"gamma": gamma, "alpha": alpha}, "train": {"seed": seed},
                      "model": {"prior_prob": 0.01, "num_scales": 3,
                                "aspect_ratios": [0.5, 1.0, 2.0]}}
            _write_yaml(d / ".hydra" / "config.yaml", config)
            ap = AP[name][seed]
            (d / "metrics.json").write_text(json.dumps(
                {"AP": ap, "AP50": 90.0 + seed, "AP75": ap - 10, "config": config}))
            history = [{"iteration": it, "AP": ap * it / 400, "AP50": 0.0, "AP75": 0.0}
                       for it in (100, 200, 300, 400)]
            (d / "metrics_history.json").write_text(json.dumps(history))
            job += 1
    return root


def _welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = student_t_quantile(0.975, df) * math.sqrt(va + vb)
    return ma - mb, ma - mb - half, ma - mb + half


def test_seeds_become_one_row_with_mean_std_and_n(sweep: Path):
    table = build_table(collect_runs(sweep))
    assert table.columns == ["gamma", "alpha"]
    assert [len(g.runs) for g in table.groups] == [3, 3, 3]
    fl, ce75, ce50 = table.groups
    assert fl.reference and (fl.stats["AP"].mean, fl.stats["AP"].std) == (72.0, 2.0)
    assert ce75.stats["AP"].mean == 78.0 and ce75.stats["AP"].std == 1.0
    assert ce75.stats["AP50"].mean == 91.0 and ce75.n == 3
    diff, low, high = _welch(AP["g0_a75"], AP["g2_a25"])
    assert (ce75.delta.diff, ce75.delta.low, ce75.delta.high) == (
        pytest.approx(diff), pytest.approx(low), pytest.approx(high))
    assert not ce75.delta.contains_zero and ce50.delta.contains_zero
    text = format_markdown(table)
    assert "| 2 | 0.25 | 72.0 ± 2.0 | **91.0 ± 1.0** | 62.0 ± 2.0 | 3 | reference |" in text
    row = "| 0 | 0.75 | **78.0 ± 1.0** | **91.0 ± 1.0** | **68.0 ± 1.0** | 3 |"
    assert f"{row} +6.0 [{low:+.1f}, {high:+.1f}] |" in text
    assert "| 0 | 0.5 | 73.2 ± 2.3 |" in text and "n.s." in text


def test_cli_reference_flag_csv_lines_and_curves(sweep: Path, capsys):
    assert main([str(sweep), "--reference", "gamma=0,alpha=0.75"]) == 0
    out = capsys.readouterr().out
    assert "| 0 | 0.75 | **78.0 ± 1.0** | **91.0 ± 1.0** | **68.0 ± 1.0** | 3 | reference |" in out
    assert "curves.png" in out
    rows = list(csv.DictReader((sweep / "table.csv").open()))
    assert len(rows) == 9 and [r["row"] for r in rows] == ["1"] * 3 + ["2"] * 3 + ["3"] * 3
    assert [r["seed"] for r in rows[:3]] == ["0", "1", "2"] and rows[4]["AP"] == "78.0"
    assert (sweep / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([str(sweep), "--reference", "2"]) == 0
    assert main([str(sweep), "--reference", "γ=0,α=0.75"]) == 0  # the column labels
    assert "| 0 | 0.75 | **78.0 ± 1.0** | **91.0 ± 1.0** | **68.0 ± 1.0** | 3 | reference |" in (
        sweep / "table.md").read_text()
    assert main([str(sweep), "--reference", "gamma=0"]) == 1  # two rows match
    assert "2 rows of the table match" in capsys.readouterr().err


def test_group_curve_is_the_mean_with_the_seed_range(sweep: Path):
    from retina.analysis.curves import group_curve

    table = build_table(collect_runs(sweep))
    curve = group_curve(table.groups[0])
    assert [c[0] for c in curve] == [100, 200, 300, 400]
    assert curve[-1] == (400, pytest.approx(72.0), 70.0, 74.0)


def test_a_failed_seed_is_counted_out_of_n(sweep: Path):
    (sweep / "1" / "metrics.json").write_text(json.dumps({"status": "diverged",
                                                          "error": "stopping at iteration 9"}))
    table = build_table(collect_runs(sweep))
    fl = table.groups[0]
    assert fl.n == 2 and fl.stats["AP"].mean == 72.0
    assert "| 2/3 |" in format_markdown(table) and "1: diverged" in format_markdown(table)


def test_a_seed_finished_twice_counts_once(sweep: Path):
    """A copied job folder (or a seed run again under another name) is not a fourth sample:
    n, the mean, the interval and the curve stay those of the three seeds, and the table says
    which job was left out."""
    import shutil

    from retina.analysis.curves import group_curve

    before = build_table(collect_runs(sweep))
    shutil.copytree(sweep / "0", sweep / "9")  # seed 0 of the FL row again
    (sweep / "9" / "metrics.json").write_text(json.dumps({
        **json.loads((sweep / "0" / "metrics.json").read_text()), "AP": 90.0}))
    after = build_table(collect_runs(sweep))
    fl, fl_before = after.groups[0], before.groups[0]
    assert fl.n == 3 and fl.stats["AP"].mean == fl_before.stats["AP"].mean
    assert after.groups[1].delta.low == before.groups[1].delta.low
    assert group_curve(fl) == group_curve(fl_before)
    text = format_markdown(after)
    assert "1 repeated seed (9: seed 0 counted once, from 0)" in text

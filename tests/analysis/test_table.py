"""build_table: every setting that varies between runs is a column, so that no two rows of
table.md share a label; --reference by column label."""

from __future__ import annotations

from typing import Any

import pytest

from retina.analysis.runs import Run
from retina.analysis.table import build_table
from retina.analysis.table_format import format_markdown, group_label


def _run(i: int, overrides: list[str], **config: Any) -> Run:
    base: dict[str, Any] = {"loss": {"gamma": 2.0, "alpha": 0.25},
                            "train": {"seed": 0, "max_iter": 100, "resume": False},
                            "paths": {"output_dir": f"/sweep/{i}"}}
    for dotted, value in config.items():
        node = base
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return Run(name=str(i), status="done", overrides=overrides, metrics={"AP": 50.0 + i},
               config=base, choices={"loss": "focal"})


def test_runs_differing_in_a_config_key_that_is_no_axis_get_its_column():
    """train.max_iter set by an experiment (no override), two seeds each: two rows, not one
    row of four 'seeds'."""
    runs = [_run(i, [f"train.seed={s}"], train__seed=s, train__max_iter=it,
                 train__resume=bool(i % 2))
            for i, (it, s) in enumerate((it, s) for it in (100, 400) for s in (0, 1))]
    table = build_table(runs)
    assert table.columns == ["train.max_iter"]  # not paths.* nor train.resume
    assert [len(g.runs) for g in table.groups] == [2, 2]
    assert [group_label(table, g) for g in table.groups] == [
        "train.max_iter=100", "train.max_iter=400"]
    assert "| 400 | **52.5 ± 0.7** |" in format_markdown(table)


def test_a_swept_key_beside_gamma_and_seeds_is_a_column():
    """`loss.gamma=0,2 train.max_iter=100,400 train.seed=0,1`: four labelled rows."""
    grid = [(g, it, s) for g in (0.0, 2.0) for it in (100, 400) for s in (0, 1)]
    runs = [_run(i, [f"loss.gamma={g:g}", f"train.max_iter={it}", f"train.seed={s}"],
                 loss__gamma=g, train__max_iter=it, train__seed=s)
            for i, (g, it, s) in enumerate(grid)]
    table = build_table(runs)
    assert table.columns == ["gamma", "train.max_iter"]
    labels = [group_label(table, g) for g in table.groups]
    assert len(set(labels)) == len(labels) == 4
    assert labels[1] == "γ=0, train.max_iter=400"


def test_keys_of_a_swept_group_or_copying_a_column_are_not_columns():
    """`model=a,b` changes many model.* keys: the choice is the column. A key interpolated
    from a column (train min_size = val min_size = scale) adds nothing."""
    runs = []
    for i, (model, size) in enumerate((m, s) for m in ("a", "b") for s in (128, 256)):
        run = _run(i, [f"model={model}", f"data.val_transforms.min_size={size}"],
                   model__width=64 if model == "a" else 128, model__name=model,
                   data__val_transforms__min_size=size, data__train_transforms__min_size=size)
        runs.append(run)
    table = build_table(runs)
    assert table.columns == ["scale", "model"]
    assert len({group_label(table, g) for g in table.groups}) == 4


@pytest.mark.parametrize("spec", ["γ=0", "γ=0,α=0.25", "gamma=0", "loss.gamma=0", "1"])
def test_reference_by_column_label_or_key(spec: str):
    runs = [_run(i, [f"loss.gamma={g:g}"], loss__gamma=g) for i, g in enumerate((0.0, 2.0))]
    table = build_table(runs, reference=spec)
    assert table.reference is table.groups[0]


def test_an_override_that_varies_with_the_seed_is_still_a_column():
    """One seed per job: two γ = 0 rows that differ only in train.max_iter say so."""
    grid = [(0.0, 100), (0.0, 400), (2.0, 100)]
    runs = [_run(i, [f"loss.gamma={g:g}", f"train.max_iter={it}", f"train.seed={i}"],
                 loss__gamma=g, train__max_iter=it, train__seed=i)
            for i, (g, it) in enumerate(grid)]
    table = build_table(runs)
    assert [group_label(table, g) for g in table.groups] == [
        "γ=0, train.max_iter=100", "γ=0, train.max_iter=400", "γ=2, train.max_iter=100"]

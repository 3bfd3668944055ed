"""README.md and docs/*.md stay true: their commands compose and their flags, files, links
and imports exist (see docs_check.py); and the checker itself catches each kind of rot."""

from __future__ import annotations

from pathlib import Path

import pytest
from docs_check import REPO, check_markdown, doc_pages, extract_commands

PAGES = doc_pages()


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_is_true(page: Path) -> None:
    assert check_markdown(page.read_text(), page) == []


def test_pages_exist_and_commands_are_found() -> None:
    """The checker reads every page and finds the commands it should check."""
    names = {p.name for p in PAGES}
    expected = {"training.md", "evaluation.md", "data.md", "model.md", "losses.md",
                "ablations.md", "performance.md", "reliability.md", "architecture.md"}  # fmt: skip
    assert expected <= names and "README.md" in names
    readme = extract_commands((REPO / "README.md").read_text(), "README.md")
    heads = {c.words[0] for c in readme}
    assert {"make", "retina-train", "retina-eval", "retina-predict", "retina-report"} <= heads
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


def _problems(markdown: str, tmp_path: Path) -> list[str]:
    page = tmp_path / "page.md"
    page.write_text(markdown)
    return check_markdown(markdown, page)


@pytest.mark.parametrize(
    "markdown,expected",
    [
        ("```bash\nretina-train loss.gamma_typo=2\n```", "Key 'gamma_typo' is not in struct"),
        ("```bash\nretina-train model=retinanet_r999\n```", "retinanet_r999"),
        ("```bash\nretina-eval ckpt=last.pt\n```", "Could not override 'ckpt'"),
        ("Run `retina-train +experiment=table9` now.", "table9"),
        ("```bash\ntorchrun --nproc_per_node=2 -m retina.train\n```", "retina.train: no such"),
        ("```bash\npython -m retina.cli.nothing\n```", "retina.cli.nothing: no such module"),
        ("```bash\nretina-make-shapes --out d --colour red\n```", "no option --colour"),
        ("```bash\nretina-check-data a.json --fast\n```", "no option --fast"),
        ("```bash\npython scripts/convert_torchvision.py a b --eps 0\n```", "no option --eps"),
        ("```bash\npython scripts/nothing.py\n```", "scripts/nothing.py: no such script"),
        ("```bash\nmake deploy\n```", "make deploy: no such Makefile target"),
        ("```bash\nretina-plot focal-curve\n```", "unknown figure 'focal-curve'"),
        ("```bash\nretina-plot loss-cdf checkpoint=a n=5\n```", "unknown argument 'n=5'"),
        ("```bash\nretina-train hydra/launcher=nope\n```", "no configs/hydra/launcher/nope"),
        ("```bash\nretina-eval checkpoint=configs/missing.pt\n```", "configs/missing.pt: no such"),
        ("See [the loop](docs/nothing.md).", "docs/nothing.md does not exist"),
        ("![plot](figures/missing.png)", "figures/missing.png does not exist"),
        ("# Title\n\nSee [below](#no-such-heading).", "no heading #no-such-heading"),
        ("The numbers live in `retina/paper.py`.", "retina/paper.py: no such file"),
        ("```python\nfrom retina.convert import from_torchvision\n```", "retina.convert"),
        ("```python\nfrom retina.ops import focal_lossx\n```", "has no focal_lossx"),
        ("Call `retina.paper.TABLE1` for the rows.", "retina.paper.TABLE1: no such module"),
        (
            "```console\n$ retina-train loss.gamma=-1\nretina-train: error: loss.gamma: bad\n```",
            "documented error 'loss.gamma: bad'",
        ),
        (
            "```console\n$ retina-train loss.gamma=1\nretina-train: error: loss.gamma: bad\n```",
            "documented to fail",
        ),
    ],
)
def test_checker_catches(markdown: str, expected: str, tmp_path: Path) -> None:
    problems = _problems(markdown, tmp_path)
    assert any(expected in p for p in problems), problems


def test_checker_accepts_good_examples(tmp_path: Path) -> None:
    markdown = """# A page

## Two things

See [two things](#two-things) and [the loop](page.md#a-page).

```bash
OMP_NUM_THREADS=1 nice -n 10 retina-train -m +experiment=table1b_gamma_alpha \\
    loss.gamma=0,0.5 hydra.launcher.n_jobs=4 hydra/launcher=joblib   # a sweep
torchrun --nproc_per_node=8 -m retina.cli.train data=coco hydra.run.dir=outputs/r50
retina-eval checkpoint=outputs/train/runs/<run>/checkpoints/last.pt data=coco data.root=/d
retina-make-shapes --out data/shapes --train 5 [--num-classes 3]
retina-plot loss-cdf checkpoint=RUN/last.pt images=50 data.root=x out=a.png
python scripts/convert_torchvision.py RetinaNet_ResNet50_FPN_Weights.COCO_V1 r50.pt
make test && .venv/bin/pytest tests/ops -q
```

```console
$ retina-train train.epochs=3
retina-train: error: Could not override 'train.epochs'. Key 'epochs' is not in struct
```
"""
    assert _problems(markdown, tmp_path) == []

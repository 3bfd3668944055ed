"""retina-plot: Figure 1 (focal-curves) values and files, argument errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retina.analysis.figures import FIGURE1_GAMMAS, focal_curves
from retina.cli.plot import main, parse_args

PNG = b"\x89PNG\r\n\x1a\n"


def test_focal_curves_follow_the_formula():
    p_t, curves = focal_curves(FIGURE1_GAMMAS, num=200)
    assert sorted(curves) == [0.0, 0.5, 1.0, 2.0, 5.0]
    ce = -np.log(p_t)
    np.testing.assert_allclose(curves[0.0], ce, rtol=1e-9, atol=1e-12)
    for gamma, loss in curves.items():  # FL / CE = (1 - p_t)^gamma
        np.testing.assert_allclose(loss, (1 - p_t) ** gamma * ce, rtol=1e-7, atol=1e-12)
    assert curves[5.0][-1] < 1e-12 and np.all(np.diff(curves[2.0]) <= 0)


def test_focal_curves_cli_writes_png(tmp_path: Path, capsys):
    out = tmp_path / "figs" / "fig1.png"
    assert main(["focal-curves", f"out={out}", "gammas=0,2"]) == 0
    assert out.read_bytes()[:8] == PNG
    assert f"wrote {out}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["focal-curves", "colour=red"], "unknown argument 'colour'"),
        (["focal-curves", "gammas=-1"], "numbers >= 0"),
        (["focal-curves", "out"], "not key=value"),
        (["loss-cdf"], "needs checkpoint=PATH"),
        (["loss-cdf", "checkpoint=x.pt", "images=many"], "images= expects an integer"),
        (["figure-9"], "unknown figure"),
    ],
)
def test_bad_arguments_give_one_line(argv, message, capsys):
    assert main(argv) in (1, 2)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_parse_args_collects_data_overrides():
    args, data = parse_args(["checkpoint=a.pt", "data.root=/x", "data=coco"],
                            ("checkpoint", "data"))
    assert args == {"checkpoint": "a.pt", "data": "coco"} and data == ["data.root=/x"]
    with pytest.raises(ValueError, match="given twice"):
        parse_args(["out=a", "out=b"], ("out",))


# --------------------------------------------------------------------------- loss-cdf
def _tiny_checkpoint(tmp_path: Path) -> Path:
    """A random-weight tiny RetinaNet checkpoint whose config points at a 4-image shapes set."""
    import torch
    import yaml
    from hydra.utils import instantiate

    from retina.data import make_shapes_dataset

    configs = Path(__file__).resolve().parents[2] / "configs"
    model_cfg = yaml.safe_load((configs / "model" / "retinanet_tiny.yaml").read_text())
    del model_cfg["defaults"]  # the choices only; the constructors default the rest
    loss_cfg = yaml.safe_load((configs / "loss" / "focal.yaml").read_text())
    data_cfg = yaml.safe_load((configs / "data" / "shapes.yaml").read_text())
    root = make_shapes_dataset(tmp_path / "shapes", train=1, val=4, size=128, workers=1)
    data_cfg.update(root=str(root), generator=None, train_transforms=None, val_transforms=None)
    torch.manual_seed(0)
    model = instantiate(model_cfg, num_classes=3, cls_loss=instantiate(loss_cfg))
    state = {"model": model.state_dict(), "iteration": 0, "cat_ids": [1, 2, 3],
             "class_names": ["circle", "square", "triangle"],
             "config": {"model": model_cfg, "loss": loss_cfg, "data": data_cfg}}
    path = tmp_path / "model.pt"
    torch.save(state, path)
    return path


def test_normalized_loss_cdf():
    from retina.analysis.loss_cdf import normalized_loss_cdf

    fraction, cdf = normalized_loss_cdf(np.array([3.0, 1.0, 0.0, 4.0]))
    np.testing.assert_allclose(fraction, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(cdf, [0.0, 0.125, 0.5, 1.0])
    fraction, cdf = normalized_loss_cdf(np.random.default_rng(0).random(10_000), points=100)
    assert len(cdf) == 100 and cdf[-1] == pytest.approx(1.0) and np.all(np.diff(cdf) >= 0)


def test_per_anchor_losses_split_and_gamma_order():
    import torch

    from retina.analysis.loss_cdf import per_anchor_losses

    logits = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 2, -2] + [-1] * 47)
    out = per_anchor_losses(logits, labels, (0.0, 2.0))
    pos0, neg0 = out[0.0]
    assert pos0.shape == (2,) and neg0.shape == (47,)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[3:], torch.zeros(47, 3), reduction="none").sum(1)
    torch.testing.assert_close(neg0, expected)
    assert torch.all(out[2.0][1] <= neg0)  # the focal term only shrinks each loss


def test_loss_cdf_cli_with_random_checkpoint(tmp_path: Path, capsys):
    checkpoint = _tiny_checkpoint(tmp_path)
    out = tmp_path / "fig4.png"
    assert main(["loss-cdf", f"checkpoint={checkpoint}", f"out={out}", "images=4"]) == 0
    assert out.read_bytes()[:8] == PNG
    assert main(["loss-cdf", f"checkpoint={tmp_path / 'nope.pt'}"]) == 1
    assert "no such checkpoint" in capsys.readouterr().err

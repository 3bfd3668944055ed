"""Every config group composes, validates and instantiates; bad values name their key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from retina.config import validate_config
from retina.engine.build import build_model, build_optimization
from retina.errors import ConfigError, one_line

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
GROUPS = {
    name: sorted(p.stem for p in (CONFIG_DIR / name).glob("*.yaml"))
    for name in ("model", "data", "loss", "optim", "schedule", "debug")
}


def _compose(overrides: list[str], data_dir: Path) -> OmegaConf:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.data_dir={data_dir}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(data_dir / "run")  # ${hydra:...} exists only in a real run
    return cfg


def test_groups_are_present():
    assert GROUPS["model"] == ["retinanet_r101_fpn", "retinanet_r18_fpn", "retinanet_r50_fpn",
                               "retinanet_tiny"]  # fmt: skip
    assert GROUPS["loss"] == ["alpha_ce", "ce", "focal", "focal_star", "ohem"]
    assert GROUPS["data"] == ["bccd", "coco", "shapes", "shapes_coco_like"]
    assert {"1x", "short"} <= set(GROUPS["schedule"])
    assert GROUPS["debug"]


def test_default_config_keys(tmp_path):
    cfg = _compose([], tmp_path)
    validate_config(cfg)
    for key in ("data.root", "loss.gamma", "loss.alpha", "model.prior_prob", "model.score_thresh",
                "model.topk_candidates", "model.nms_thresh", "model.detections_per_img",
                "train.max_iter", "train.batch_size", "train.eval_period",
                "train.checkpoint_period", "train.resume", "train.deterministic",
                "train.seed"):  # fmt: skip
        assert OmegaConf.select(cfg, key, default="missing") != "missing", key
    assert cfg.model.prior_prob == 0.01 and cfg.loss.gamma == 2.0 and cfg.loss.alpha == 0.25


def test_paper_schedule_and_model(tmp_path):
    cfg = _compose(["model=retinanet_r50_fpn", "schedule=1x"], tmp_path)
    assert (cfg.train.max_iter, cfg.train.batch_size) == (90000, 16)
    assert list(cfg.schedule.steps) == [60000, 80000] and cfg.schedule.warmup_iters > 0
    assert (cfg.optim.base_lr, cfg.optim.reference_batch_size) == (0.01, 16)
    assert cfg.optim.optimizer.momentum == 0.9 and cfg.optim.weight_decay == 1e-4
    m = cfg.model
    assert (m.depth, m.fpn_channels, m.num_convs, m.num_scales) == (50, 256, 4, 3)
    assert (m.score_thresh, m.topk_candidates, m.nms_thresh) == (0.05, 1000, 0.5)
    assert (m.fg_iou_thresh, m.bg_iou_thresh) == (0.5, 0.4)
    assert list(m.anchor_sizes) == [32, 64, 128, 256, 512]


@pytest.mark.parametrize("loss", GROUPS["loss"])
def test_every_loss_instantiates(tmp_path, loss):
    cfg = _compose([f"loss={loss}"], tmp_path)
    validate_config(cfg)
    fn = instantiate(cfg.loss)
    logits = torch.randn(6, 3)
    labels = torch.tensor([0, 1, 2, -1, -1, -2])
    if loss == "ohem":
        return  # needs per-image anchors from the meta-architecture; built only here
    value = fn(logits, labels, 1)
    assert value.ndim == 0 and torch.isfinite(value)


@pytest.mark.parametrize("model", GROUPS["model"])
def test_every_model_instantiates(tmp_path, model):
    overrides = [f"model={model}"]
    if model != "retinanet_tiny":
        # no weight files in the test environment; random stages cannot be frozen
        overrides += ["model.weights=null", "model.freeze_at=0"]
    cfg = _compose(overrides, tmp_path)
    validate_config(cfg)
    net = build_model(cfg.model, cfg.loss, num_classes=3)
    optimizer, scheduler = build_optimization(
        net, cfg.optim, cfg.schedule, batch_size=cfg.train.batch_size, max_iter=cfg.train.max_iter
    )
    expected_lr = cfg.optim.base_lr * cfg.train.batch_size / 16 * cfg.schedule.warmup_factor
    assert optimizer.param_groups[0]["lr"] == pytest.approx(expected_lr)
    if model == "retinanet_tiny":
        net.eval()
        with torch.no_grad():
            (out,) = net([torch.rand(3, 128, 128)])
        assert set(out) >= {"boxes", "scores", "labels"}


@pytest.mark.parametrize(
    "overrides",
    [[f"data={d}"] for d in GROUPS["data"]]
    + [[f"schedule={s}"] for s in GROUPS["schedule"]]
    + [[f"debug={d}"] for d in GROUPS["debug"]]
    + [[f"optim={o}"] for o in GROUPS["optim"]],
)
def test_other_groups_compose(tmp_path, overrides):
    cfg = _compose(overrides, tmp_path)
    if overrides[0] in ("data=coco", "data=bccd"):  # no generator: the folder must exist
        with pytest.raises(ConfigError, match=r"^data.root: directory .* does not exist"):
            validate_config(cfg)
        (tmp_path / overrides[0].removeprefix("data=")).mkdir()
    validate_config(cfg)
    for node in ("train_transforms", "val_transforms"):
        if cfg.data.get(node) is not None:
            assert callable(instantiate(cfg.data[node]))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("loss.gamma=-0.5", "loss.gamma"),
        ("loss.alpha=1.5", "loss.alpha"),
        ("loss.alpha=-0.1", "loss.alpha"),
        ("model.prior_prob=0", "model.prior_prob"),
        ("model.prior_prob=1.0", "model.prior_prob"),
        ("model.score_thresh=2", "model.score_thresh"),
        ("model.nms_thresh=0", "model.nms_thresh"),
        ("model.topk_candidates=0", "model.topk_candidates"),
        ("model.detections_per_img=-3", "model.detections_per_img"),
        ("train.max_iter=0", "train.max_iter"),
        ("train.batch_size=abc", "train.batch_size"),
        ("train.eval_period=-1", "train.eval_period"),
        ("train.checkpoint_period=0", "train.checkpoint_period"),
        ("train.resume=maybe", "train.resume"),
        ("train.deterministic=2", "train.deterministic"),
        ("train.seed=-1", "train.seed"),
        ("train.amp=fp8", "train.amp"),
        ("schedule.name=linear", "schedule.name"),
        ("schedule.steps=[5,3]", "schedule.steps"),
        ("optim.base_lr=0", "optim.base_lr"),
        ("+train.epochs=3", "train.epochs"),
        ("+loss.beta=1", "loss.beta"),
        ("+model.dropout=0.1", "model.dropout"),
        ("+data.train_transforms.blur=3", "data.train_transforms.blur"),
        ("data.max_broken_fraction=2", "data.max_broken_fraction"),
        ("data.invalid_boxes=clip", "data.invalid_boxes"),
        ("data=coco", "data.root"),
        ("data.root=/does/not/exist", "data.root"),
    ],
)
def test_bad_values_name_their_key(tmp_path, override, key):
    cfg = _compose([override], tmp_path)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert err.value.key == key
    assert str(err.value).startswith(f"{key}: ") and "\n" not in str(err.value)


@pytest.mark.parametrize("model", ["retinanet_r18_fpn", "retinanet_r50_fpn", "retinanet_tiny"])
def test_freezing_random_stages_is_refused(tmp_path, model):
    """``model.weights=null`` with the configs' ``freeze_at: 2`` would train with random stem
    and res2 weights frozen for the whole run: one line telling what to set instead."""
    cfg = _compose([f"model={model}", "model.weights=null", "model.freeze_at=2"], tmp_path)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert str(err.value) == (
        "model.freeze_at: 2 would freeze randomly initialised stages (model.weights is null); "
        "set model.freeze_at=0 to train from scratch, or load weights (model.weights=...)")
    validate_config(_compose([f"model={model}", "model.weights=null", "model.freeze_at=0"],
                             tmp_path))


def test_null_alpha_and_prior_are_allowed(tmp_path):
    validate_config(_compose(["loss.alpha=null", "model.prior_prob=null"], tmp_path))


def test_generated_root_only_at_its_default_place(tmp_path):
    cfg = _compose([], tmp_path)  # shapes at <data_dir>/shapes, missing: generated later
    assert not Path(cfg.data.root).exists()
    validate_config(cfg)
    other = _compose([f"data.root={tmp_path / 'elsewhere'}"], tmp_path)
    with pytest.raises(ConfigError, match="^data.root: "):
        validate_config(other)


def test_one_line_strips_hydra_hints():
    class Wrapped(Exception):
        pass

    exc = Wrapped("Could not override 'train.foo'.\nTo append to your config use +train.foo=1")
    exc.__cause__ = ValueError("Key 'foo' is not in struct\n    full_key: train.foo")
    assert one_line(exc) == "Could not override 'train.foo'. Key 'foo' is not in struct"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["loss=focal_star", "loss.gamma=0"], "loss.gamma"),
        (["loss=ohem", "loss.nms_thresh=0"], "loss.nms_thresh"),
        (["loss=ohem", "loss.positive_fraction=0"], "loss.positive_fraction"),
        (["loss.backend=fast"], "loss.backend"),
        (["model.fg_iou_thresh=1.5"], "model.fg_iou_thresh"),
        (["model.bg_iou_thresh=0.6"], "model.bg_iou_thresh"),
        (["model.anchor_sizes=[32,64,0,256,512]"], "model.anchor_sizes"),
        (["model.num_convs=-1"], "model.num_convs"),
        (["model.fpn_channels=0"], "model.fpn_channels"),
        (["model=retinanet_r50_fpn", "model.score_thresh=-1"], "model.score_thresh"),
    ],
)
def test_constructor_checks_name_the_dotted_key(tmp_path, overrides, key):
    """The loss and model ranges live in their constructors only; validate_config builds
    the nodes (model on the meta device) and names the key of the failing argument."""
    with pytest.raises(ConfigError) as err:
        validate_config(_compose(overrides, tmp_path))
    assert err.value.key == key, str(err.value)
    assert "\n" not in str(err.value)


def test_every_loss_and_model_config_passes_its_constructors(tmp_path):
    for group in ("loss", "model"):
        for name in GROUPS[group]:
            validate_config(_compose([f"{group}={name}"], tmp_path))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.smooth_l1_beta=inf", "must be a finite number, got inf"),
        ("model.smooth_l1_beta=nan", "must be a finite number, got nan"),
        ("model.smooth_l1_beta=-1", "must satisfy 0.0 <= value, got -1"),
        ("optim.optimizer.momentum=1.5", "must satisfy 0.0 <= value < 1.0, got 1.5"),
        ("optim.optimizer.momentum=1", "must satisfy 0.0 <= value < 1.0, got 1"),
        ("optim.optimizer.momentum=-0.1", "must satisfy 0.0 <= value < 1.0, got -0.1"),
    ],
)
def test_ranges_of_smooth_l1_beta_and_momentum(tmp_path, override, message):
    """Issue 23: ``inf`` made the box loss 0 throughout, ``-1``/``nan`` failed at iteration 1
    (``nan`` as "negative"), ``momentum=1.5`` was accepted."""
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as err:
        validate_config(_compose([override], tmp_path))
    assert str(err.value) == f"{key}: {message}"
    validate_config(_compose(["model.smooth_l1_beta=0", "optim.optimizer.momentum=0"], tmp_path))


def test_a_generated_dataset_must_match_the_generator(tmp_path):
    """Issue 23: ``data.generator.num_classes=5`` on an existing default root trained on its
    3 classes while ``metrics.json`` recorded 5."""
    from retina.engine.build import prepare_data_root
    from retina.engine.distributed import DistInfo

    tiny = ["data.generator.train=2", "data.generator.val=1", "data.generator.size=64"]
    root = prepare_data_root(_compose(tiny, tmp_path).data, DistInfo())
    assert root == tmp_path / "shapes" and (root / "generator.json").is_file()
    assert prepare_data_root(_compose(tiny, tmp_path).data, DistInfo()) == root
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    other = _compose([*tiny, "data.generator.num_classes=5"], tmp_path)
    with pytest.raises(ConfigError, match=r"^data.generator.num_classes: .* num_classes=3, "
                                          r"this config asks for 5; delete "):
        prepare_data_root(other.data, DistInfo())
    (root / "generator.json").unlink()  # a dataset generated before the record existed
    with pytest.raises(ConfigError, match="^data.generator.num_classes: "):
        prepare_data_root(other.data, DistInfo())
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == [
        p for p in before if p.name != "generator.json"]
    # a root chosen by hand holds the user's own data: the generator does not describe it
    mine = _compose([*tiny, f"data.root={root}", "paths.data_dir=/elsewhere"], tmp_path)
    assert prepare_data_root(mine.data, DistInfo()) == root


@pytest.mark.parametrize(("override", "message"), [
    ("+data.generator.colour=red", "unknown generator option(s) colour"),
    ("data.generator.max_objects=1", "max_objects >= 3"),
])
def test_bad_generator_options_are_one_line(tmp_path, override, message):
    from retina.engine.build import prepare_data_root
    from retina.engine.distributed import DistInfo

    cfg = _compose([override, "data.generator.train=2", "data.generator.val=1"], tmp_path)
    with pytest.raises(ConfigError, match=r"^data.generator: .*" + re.escape(message)):
        prepare_data_root(cfg.data, DistInfo())
    assert not any(tmp_path.iterdir())

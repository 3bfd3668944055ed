"""Parity with torchvision: random-weight RetinaNet v1 and v2 -> from_torchvision -> the same
anchors, head outputs, detections and training losses; the state-dict conversion script.

torchvision's GeneralizedRCNNTransform resizes its inputs; it is built with
``min_size = max_size =`` the image side, so its resize is the identity and the images
(multiples of 128) are padded by neither model. Both models then see identical tensors.
"""

import importlib.util
from pathlib import Path

import pytest
import torch
from torchvision.models.detection import retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2
from torchvision.models.detection.image_list import ImageList

from retina.engine.checkpoint import build_model_from_checkpoint, load_checkpoint
from retina.modeling.torchvision import (
    convert_state_dict,
    from_torchvision,
    infer_config_from_state_dict,
)

SIDE = 128
NUM_CLASSES = 5
BUILDERS = {"v1": retinanet_resnet50_fpn, "v2": retinanet_resnet50_fpn_v2}


@pytest.fixture(scope="module", params=["v1", "v2"])
def pair(request):
    torch.manual_seed(0)
    tv = BUILDERS[request.param](
        weights=None,
        weights_backbone=None,
        num_classes=NUM_CLASSES,
        min_size=SIDE,
        max_size=SIDE,
        score_thresh=0.01,  # about half the scores of a prior-initialised head pass
        detections_per_img=50,
    ).eval()
    images = [torch.rand(3, SIDE, SIDE, generator=torch.Generator().manual_seed(i)) for i in (1, 2)]
    return request.param, tv, from_torchvision(tv), images


def test_settings_carried_over(pair):
    version, tv, ours, _ = pair
    assert not ours.training
    assert (ours.score_thresh, ours.topk_candidates, ours.nms_thresh, ours.detections_per_img) == (
        0.01, 1000, 0.5, 50,
    )  # fmt: skip
    assert ours.fpn.p6_from == ("p5" if version == "v1" else "c5")
    assert ours.box_loss == ("l1" if version == "v1" else "giou")
    assert ours.loss_normalizer == "image"
    torch.testing.assert_close(ours.pixel_std.flatten(), torch.tensor(tv.transform.image_std))


@torch.no_grad()
def test_same_anchors_features_and_head_outputs(pair):
    _, tv, ours, images = pair
    batch, _ = ours.preprocess(images)
    tv_batch, _ = tv.transform(images)
    torch.testing.assert_close(batch, tv_batch.tensors, rtol=0, atol=0)
    tv_feats = list(tv.backbone(tv_batch.tensors).values())
    feats = ours.fpn(ours.backbone(batch))
    for a, b in zip(feats, tv_feats, strict=True):
        torch.testing.assert_close(a, b)
    tv_anchors = tv.anchor_generator(ImageList(tv_batch.tensors, tv_batch.image_sizes), tv_feats)
    anchors = ours.anchor_generator([f.shape[-2:] for f in feats], batch.device)
    torch.testing.assert_close(anchors, tv_anchors[0], rtol=0, atol=0)
    tv_out = tv.head(tv_feats)
    logits, deltas = ours.head(feats)
    torch.testing.assert_close(logits, tv_out["cls_logits"])
    torch.testing.assert_close(deltas, tv_out["bbox_regression"])


@torch.no_grad()
def test_same_detections(pair):
    _, tv, ours, images = pair
    expected, got = tv(images), ours(images)
    for e, g in zip(expected, got, strict=True):
        assert len(g["boxes"]) == 50
        torch.testing.assert_close(g["boxes"], e["boxes"])
        torch.testing.assert_close(g["scores"], e["scores"])
        assert torch.equal(g["labels"], e["labels"])


def test_same_training_losses(pair):
    _, tv, ours, images = pair
    targets = [
        {"boxes": torch.tensor([[10.0, 12, 60, 100], [70, 30, 125, 120]]),
         "labels": torch.tensor([0, 4])},
        {"boxes": torch.tensor([[0.0, 0, 100, 30]]), "labels": torch.tensor([3])},
    ]  # fmt: skip
    tv.train()
    ours.train()
    try:
        expected = tv(images, targets)
        got = ours(images, targets).losses
    finally:
        tv.eval()
        ours.eval()
    torch.testing.assert_close(got["loss_cls"], expected["classification"])
    torch.testing.assert_close(got["loss_box_reg"], expected["bbox_regression"])


def test_old_head_layout_and_config_inference(pair):
    version, tv, _, _ = pair
    state = tv.state_dict()
    old = {}
    for k, v in state.items():  # torchvision < 0.13 layout of the published COCO_V1 file
        if ".conv." in k and k.startswith("head.") and version == "v1":
            prefix, rest = k.split(".conv.")
            i, _, name = rest.split(".")
            k = f"{prefix}.conv.{2 * int(i)}.{name}"
        old[k] = v
    assert set(convert_state_dict(old)) == set(convert_state_dict(state))
    cfg = infer_config_from_state_dict(state)
    assert cfg["num_classes"] == NUM_CLASSES and cfg["depth"] == 50
    assert cfg["norm_eps"] == (0.0 if version == "v1" else 1e-5)
    with pytest.raises(ValueError, match="not part of a torchvision RetinaNet"):
        convert_state_dict({"roi_heads.box_head.fc6.weight": torch.zeros(1)})


def _load_script():
    path = Path(__file__).resolve().parents[2] / "scripts" / "convert_torchvision.py"
    spec = importlib.util.spec_from_file_location("convert_torchvision", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # two more ResNet-50 builds and a checkpoint round trip (~15-20 s)
@pytest.mark.parametrize("pair", ["v2"], indirect=True)  # v1's key layout is covered above
def test_convert_script_writes_an_evaluable_checkpoint(pair, tmp_path, capsys, torch_home):
    _, tv, ours, images = pair
    script = _load_script()
    src, dst = tmp_path / "tv.pth", tmp_path / "ours.pt"
    torch.save(tv.state_dict(), src)
    assert script.main([str(src), str(dst)]) == 0
    assert "RetinaNet v2" in capsys.readouterr().out
    state = load_checkpoint(dst)
    model = build_model_from_checkpoint(state, dst, {"score_thresh": 0.01}).eval()
    assert model.backbone.body.bn1.eps == 1e-5
    model.detections_per_img = 50
    with torch.no_grad():
        got, expected = model(images), ours(images)
    for g, e in zip(got, expected, strict=True):  # frozen BN vs eval-mode BN: rounding only
        torch.testing.assert_close(g["boxes"], e["boxes"], rtol=1e-4, atol=1e-2)
    with pytest.raises(SystemExit, match="nope.pth: file not found"):
        script.main([str(tmp_path / "nope.pth"), str(dst)])
    # the same weights by name, from the hub cache (torch_home: no network)
    cached = torch_home / "hub" / "checkpoints" / "retinanet_resnet50_fpn_v2_coco-5905b1c5.pth"
    cached.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), cached)
    by_name = tmp_path / "by_name.pt"
    assert script.main(["RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1", str(by_name)]) == 0
    for key, value in load_checkpoint(by_name)["model"].items():
        torch.testing.assert_close(value, state["model"][key], rtol=0, atol=0)


@pytest.mark.parametrize(
    "name,filename",
    [
        ("RetinaNet_ResNet50_FPN_Weights.COCO_V1", "retinanet_resnet50_fpn_coco-eeacb38b.pth"),
        (
            "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1",
            "retinanet_resnet50_fpn_v2_coco-5905b1c5.pth",
        ),
    ],
)
def test_convert_script_reads_weights_names_from_the_hub_cache(name, filename, torch_home):
    script = _load_script()
    planted = {"head.classification_head.cls_logits.bias": torch.arange(3.0)}
    path = torch_home / "hub" / "checkpoints" / filename
    path.parent.mkdir(parents=True)
    torch.save(planted, path)
    torch.testing.assert_close(script._load_state(name), planted)


def test_convert_script_offline_and_unknown_names(torch_home, tmp_path):
    script = _load_script()
    name = "RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1"
    url = "https://download.pytorch.org/models/retinanet_resnet50_fpn_v2_coco-5905b1c5.pth"
    where = torch_home / "hub" / "checkpoints" / "retinanet_resnet50_fpn_v2_coco-5905b1c5.pth"
    with pytest.raises(SystemExit) as info:
        script.main([name, str(tmp_path / "out.pt")])
    assert str(info.value) == (
        f"weights={name}: cannot download {url} ([Errno 111] Connection refused); "
        f"put the file at {where}"
    )
    with pytest.raises(SystemExit, match="ResNet50_Weights.IMAGENET1K_V1: neither an existing"):
        script.main(["ResNet50_Weights.IMAGENET1K_V1", str(tmp_path / "out.pt")])
    assert not (tmp_path / "out.pt").exists()

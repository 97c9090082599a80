"""model.weights and model.norm: what each builds and loads (models/weights.py)."""

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.ops.misc import FrozenBatchNorm2d

from focalbench.config import LossCfg, MatcherCfg, RetinaNetCfg
from focalbench.errors import InputError
from focalbench.models import build_model
from focalbench.models.detr import SmallDETR
from tests.models.test_detr import TINY as TINY_DETR

TINY_RETINANET = RetinaNetCfg(fpn_channels=64, head_convs=1)
C, S = 3, 64


def _build(model_cfg):
    return build_model(model_cfg, LossCfg(), MatcherCfg(), C, S)


def _body(model) -> nn.Module:
    """The torchvision ResNet inside either detector."""
    return model.backbone.net if isinstance(model, SmallDETR) else model.backbone.body


@pytest.fixture
def r18_file(tmp_path):
    torch.manual_seed(3)
    reference = resnet18(weights=None)
    with torch.no_grad():  # statistics a trained BatchNorm would have: not the init's 0 and 1
        reference.bn1.running_mean.uniform_(-1, 1)
        reference.bn1.running_var.uniform_(0.5, 2)
    path = tmp_path / "r18.pt"
    torch.save(reference.state_dict(), path)
    return reference, path


@pytest.mark.parametrize("cfg", [TINY_RETINANET, TINY_DETR], ids=["retinanet", "detr"])
@pytest.mark.parametrize(("norm", "layer"), [("bn", nn.BatchNorm2d), ("auto", FrozenBatchNorm2d),
                                             ("frozen_bn", FrozenBatchNorm2d)])  # fmt: skip
def test_a_local_file_loads_with_the_norm_asked_for(cfg, norm, layer, r18_file):
    reference, path = r18_file
    body = _body(_build(dataclasses.replace(cfg, weights=str(path), norm=norm)))
    assert type(body.bn1) is layer  # auto: pretrained weights keep their statistics frozen
    torch.testing.assert_close(body.conv1.weight, reference.conv1.weight)
    torch.testing.assert_close(body.bn1.running_var, reference.bn1.running_var)


@pytest.mark.parametrize("cfg", [TINY_RETINANET, TINY_DETR], ids=["retinanet", "detr"])
def test_from_scratch_trains_batchnorm(cfg):
    assert type(_body(_build(cfg)).bn1) is nn.BatchNorm2d


@pytest.mark.parametrize("cfg", [TINY_RETINANET, TINY_DETR], ids=["retinanet", "detr"])
def test_torchvision_weights_load_from_the_hub_cache_without_network(cfg, r18_file, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    """torchvision's own weights API reads a file already in $TORCH_HOME/hub/checkpoints/ under
    the name its weights entry gives, and downloads nothing."""
    from torchvision.models import ResNet18_Weights

    reference, path = r18_file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    name = Path(ResNet18_Weights.IMAGENET1K_V1.url).name  # resnet18-f37072fd.pth
    cached = tmp_path / "torch" / "hub" / "checkpoints" / name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    monkeypatch.setattr("torch.hub.download_url_to_file", _no_network)
    body = _body(_build(dataclasses.replace(cfg, weights="IMAGENET1K_V1")))
    torch.testing.assert_close(body.conv1.weight, reference.conv1.weight)
    assert type(body.bn1) is FrozenBatchNorm2d


def _no_network(*args, **kwargs):
    raise AssertionError("a download was attempted")


@pytest.mark.parametrize("cfg", [TINY_RETINANET, TINY_DETR], ids=["retinanet", "detr"])
def test_synthetic_weights_are_the_pretrain_cache(cfg, r18_file, tmp_path):
    from focalbench.models import build_model
    from focalbench.models.pretrained import SYNTHETIC_FORMAT, synthetic_cache_path

    reference, _ = r18_file
    cache = synthetic_cache_path(tmp_path / "results", "resnet18")
    cache.parent.mkdir(parents=True)
    payload = {"format": SYNTHETIC_FORMAT, "backbone": "resnet18",
               "state_dict": reference.state_dict()}  # fmt: skip
    torch.save(payload, cache)  # what `focalbench pretrain` writes
    model_cfg = dataclasses.replace(cfg, weights="synthetic")
    body = _body(build_model(model_cfg, LossCfg(), MatcherCfg(), C, S, tmp_path / "results"))
    torch.testing.assert_close(body.conv1.weight, reference.conv1.weight)


# model.trainable_layers -> the stages (conv1 = the stem) left frozen
FROZEN = [(0, {"conv1", "layer1", "layer2", "layer3"}), (3, {"conv1", "layer1"}), (5, set())]


@pytest.mark.parametrize("cfg", [TINY_RETINANET, TINY_DETR], ids=["retinanet", "detr"])
@pytest.mark.parametrize(("trainable", "frozen"), FROZEN)
def test_trainable_layers_freeze_the_lower_stages(cfg, trainable, frozen):
    body = _body(_build(dataclasses.replace(cfg, trainable_layers=trainable)))
    still = {n.partition(".")[0] for n, p in body.named_parameters() if not p.requires_grad}
    still = {"conv1" if n == "bn1" else n for n in still}
    assert still & {"conv1", "layer1", "layer2", "layer3"} == frozen


def test_auto_trains_every_stage_from_scratch_and_three_with_weights():
    assert RetinaNetCfg().trainable == 5
    assert RetinaNetCfg(weights="synthetic").trainable == 3


@pytest.mark.parametrize(
    ("weights", "needle"),
    [
        ("IMAGENET1K_V9", "model.weights='IMAGENET1K_V9' is not a torchvision weights name of "),
        ("synthetic", "focalbench pretrain"),
        ("/nonexistent/r18.pt", "model.weights='/nonexistent/r18.pt': no such file"),
    ],
)
def test_weights_it_cannot_load_are_one_line_errors(weights, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no pretrain cache under ./results
    with pytest.raises(InputError) as info:
        _build(dataclasses.replace(TINY_RETINANET, weights=weights))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_file_of_another_architecture_is_named(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(InputError, match=r"does not fit model.backbone=resnet18: missing key 'bn1"):
        _build(dataclasses.replace(TINY_RETINANET, weights=str(path)))
    torch.save(resnet18(weights=None).state_dict(), path)
    with pytest.raises(
        InputError,
        match=r"does not fit model.backbone=resnet50: 'layer1.0.conv1.weight' has shape "
        r"\(64, 64, 3, 3\), expected \(64, 64, 1, 1\)",
    ):
        _build(dataclasses.replace(TINY_RETINANET, weights=str(path), backbone="resnet50"))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="is not a loadable state dict"):
        _build(dataclasses.replace(TINY_RETINANET, weights=str(path)))

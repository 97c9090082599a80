"""model.weights and model.norm: what each builds and loads (models/weights.py)."""

import dataclasses

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


@pytest.mark.parametrize(
    ("weights", "needle"),
    [
        ("IMAGENET1K_V1", "model.weights='IMAGENET1K_V1': not yet supported"),
        ("synthetic", "model.weights='synthetic': not yet supported"),
        ("/nonexistent/r18.pt", "model.weights='/nonexistent/r18.pt': no such file"),
    ],
)
def test_weights_it_cannot_load_are_one_line_errors(weights, needle):
    with pytest.raises(InputError) as info:
        _build(dataclasses.replace(TINY_RETINANET, weights=weights))
    assert str(info.value) == needle


def test_a_file_of_another_architecture_is_named(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(InputError, match=r"does not fit model.backbone=resnet18 \(missing e.g."):
        _build(dataclasses.replace(TINY_RETINANET, weights=str(path)))
    torch.save(resnet18(weights=None).state_dict(), path)
    with pytest.raises(InputError, match=r"does not fit model.backbone=resnet50 \(size mismatch"):
        _build(dataclasses.replace(TINY_RETINANET, weights=str(path), backbone="resnet50"))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="is not a loadable state dict"):
        _build(dataclasses.replace(TINY_RETINANET, weights=str(path)))

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
                                             ("frozen_bn", FrozenBatchNorm2d),
                                             ("adabn", FrozenBatchNorm2d)])  # fmt: skip
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


class _TwoNorms(nn.Module):
    """conv - norm - relu - conv - norm, called as a detector is: (images, targets)."""

    def __init__(self, norm):
        super().__init__()
        layers = [nn.Conv2d(3, 4, 3), norm(4), nn.ReLU(), nn.Conv2d(4, 5, 3), norm(5)]
        self.net = nn.Sequential(*layers)

    def forward(self, images, targets=None):
        return self.net(torch.stack(images))


def test_adabn_takes_the_statistics_batchnorm_measures_in_training():
    """adapt_norm_statistics on frozen norms == torch's BatchNorm2d in training mode on the same
    batch (momentum 1: the running statistics become the batch's; the second layer sees the first
    normalized with the batch's statistics), with the affine weights kept and the RNG untouched."""
    from focalbench.models.weights import adapt_norm_statistics

    torch.manual_seed(0)
    live = _TwoNorms(lambda c: nn.BatchNorm2d(c, momentum=1.0))
    for bn in (live.net[1], live.net[4]):
        nn.init.uniform_(bn.weight, 0.5, 2.0), nn.init.uniform_(bn.bias, -1.0, 1.0)
    frozen = _TwoNorms(FrozenBatchNorm2d)
    frozen.load_state_dict({k: v for k, v in live.state_dict().items() if "num_batches" not in k})
    images = [torch.rand(3, 12, 12) * 3 + 1 for _ in range(6)]  # far from mean 0, variance 1
    live.train()(images)
    frozen.eval()
    state = torch.get_rng_state()
    assert adapt_norm_statistics(frozen, [(images, [{}] * 6)]) == 2
    assert torch.equal(torch.get_rng_state(), state)
    for i in (1, 4):
        torch.testing.assert_close(frozen.net[i].running_mean, live.net[i].running_mean)
        torch.testing.assert_close(frozen.net[i].running_var, live.net[i].running_var)
        torch.testing.assert_close(frozen.net[i].weight, live.net[i].weight)
    assert not frozen.training  # its mode is given back
    # split in two batches the pooled statistics stay those of the first layer's whole input
    again = _TwoNorms(FrozenBatchNorm2d)
    again.load_state_dict(frozen.state_dict())
    adapt_norm_statistics(again, [(images[:3], None), (images[3:], None)])
    torch.testing.assert_close(again.net[1].running_mean, live.net[1].running_mean)
    torch.testing.assert_close(again.net[1].running_var, live.net[1].running_var)


def test_a_run_with_adabn_says_so_and_its_checkpoint_holds_the_adapted_statistics(
    cli, r18_file, tmp_path
):
    """model.norm=adabn end to end (engine/run.py): the run says which statistics its norms took,
    and the checkpoint's stem norm holds new statistics but the file's affine weights (frozen)."""
    from tests.conftest import TINY

    reference, path = r18_file
    result = cli("train", *TINY, f"model.weights={path}", "model.norm=adabn")
    assert result.returncode == 0, result.stderr[-2000:]
    said = "model.norm=adabn: 20 frozen BatchNorms take the statistics of 4 training images"
    assert said in result.stdout.replace("\n", " ")
    (checkpoint,) = (tmp_path / "results" / "runs").glob("*/checkpoint.pt")
    state = torch.load(checkpoint, weights_only=True)["model"]
    stem = {k.rpartition("bn1.")[2]: v for k, v in state.items() if k.endswith(
        ("body.bn1.running_mean", "body.bn1.weight"))}  # fmt: skip
    assert not torch.allclose(stem["running_mean"], reference.bn1.running_mean)
    torch.testing.assert_close(stem["weight"], reference.bn1.weight)

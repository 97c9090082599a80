"""Backbone state dicts for model.weights= (focalbench/models/pretrained.py): torchvision's weights
through the real hub-cache code with no network, the synthetic cache, and the fit check."""

import urllib.error

import pytest
import torch
import torchvision

from focalbench.errors import InputError
from focalbench.models.pretrained import (
    SYNTHETIC_FORMAT,
    check_backbone_state,
    hub_cache_file,
    synthetic_backbone_state,
    synthetic_cache_path,
    torchvision_backbone_state,
    torchvision_weights_names,
)


@pytest.fixture(scope="module")
def r18_state() -> dict:
    """A resnet18 state dict with recognisable values (seeded init, not ImageNet's)."""
    torch.manual_seed(0)
    return torchvision.models.resnet18().state_dict()


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """TORCH_HOME in tmp_path, and any download attempt fails as it does without network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


def _equal(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["IMAGENET1K_V1", "DEFAULT", "ResNet18_Weights.IMAGENET1K_V1"])
def test_torchvision_weights_load_from_the_hub_cache_offline(name, r18_state, offline_hub):
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    path = hub_cache_file(url)
    assert path == offline_hub / "resnet18-f37072fd.pth"  # torchvision's own file name
    path.parent.mkdir(parents=True)
    torch.save(r18_state, path)
    state = torchvision_backbone_state("resnet18", name)
    assert not any(k.startswith("fc.") or k.endswith("num_batches_tracked") for k in state)
    assert _equal(state, r18_state) and len(state) == len(r18_state) - 2 - 20  # fc.*, 20 BN steps
    model = torchvision.models.resnet18()
    assert model.load_state_dict(state, strict=False).missing_keys == ["fc.weight", "fc.bias"]


def test_torchvision_weights_without_file_or_network(offline_hub):
    with pytest.raises(InputError) as info:
        torchvision_backbone_state("resnet18", "IMAGENET1K_V1")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("model.weights='IMAGENET1K_V1'")
    assert str(offline_hub / "resnet18-f37072fd.pth") in msg and "copy it to" in msg


def test_torchvision_weights_corrupt_cache_file(offline_hub):
    offline_hub.mkdir(parents=True)
    (offline_hub / "resnet18-f37072fd.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"resnet18-f37072fd.pth is corrupt") as info:
        torchvision_backbone_state("resnet18", "IMAGENET1K_V1")
    assert "\n" not in str(info.value)


def test_unknown_weights_name_lists_the_valid_ones():
    with pytest.raises(InputError) as info:
        torchvision_backbone_state("resnet50", "IMAGENET9K")
    msg = str(info.value)
    assert msg.startswith("model.weights='IMAGENET9K' is not a torchvision weights name")
    assert "'IMAGENET1K_V1', 'IMAGENET1K_V2', 'DEFAULT'" in msg and "'synthetic'" in msg
    assert torchvision_weights_names("resnet18") == ["IMAGENET1K_V1", "DEFAULT"]
    with pytest.raises(InputError, match=r"model.backbone='vgg16' is unknown"):
        torchvision_backbone_state("vgg16", "DEFAULT")


def test_a_state_that_does_not_fit_names_the_first_key(r18_state):
    shape = dict(r18_state)
    shape["layer1.0.conv1.weight"] = torch.zeros(32, 64, 3, 3)
    with pytest.raises(InputError) as info:
        check_backbone_state(shape, "resnet18", "r18.pt")
    assert str(info.value) == (
        "model.weights='r18.pt' does not fit model.backbone=resnet18: 'layer1.0.conv1.weight' has "
        "shape (32, 64, 3, 3), expected (64, 64, 3, 3)"
    )
    missing = {k: v for k, v in r18_state.items() if not k.startswith("layer4.")}
    with pytest.raises(InputError, match=r"resnet50: 'layer1.0.conv1.weight' has shape"):
        check_backbone_state(missing, "resnet50", "r18.pt")  # a resnet18 file for a resnet50
    with pytest.raises(InputError, match=r"missing key 'layer4.0.conv1.weight'"):
        check_backbone_state(missing, "resnet18", "r18.pt")
    extra = {**r18_state, "head.weight": torch.zeros(1)}
    with pytest.raises(InputError, match=r"unexpected key 'head.weight'"):
        check_backbone_state(extra, "resnet18", "r18.pt")
    with pytest.raises(InputError, match=r"is not a state dict of tensors"):
        check_backbone_state([1, 2], "resnet18", "r18.pt")
    # a classifier of another width and a {"state_dict": ...} wrapper are fine
    other_fc = {**r18_state, "fc.weight": torch.zeros(7, 512), "fc.bias": torch.zeros(7)}
    assert _equal(check_backbone_state({"state_dict": other_fc}, "resnet18", "x"), r18_state)


def test_synthetic_cache_missing_corrupt_and_ok(tmp_path, r18_state):
    path = synthetic_cache_path(tmp_path, "resnet18", seed=3)
    assert path == tmp_path / "pretrained" / "synthetic-resnet18-seed3.pt"
    with pytest.raises(InputError) as info:
        synthetic_backbone_state("resnet18", tmp_path, seed=3)
    assert "model.weights=synthetic: no pretrained resnet18" in str(info.value)
    assert "run `focalbench pretrain --backbone resnet18 --seed 3" in str(info.value)

    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(InputError, match=r"synthetic-resnet18-seed3.pt is corrupt") as info:
        synthetic_backbone_state("resnet18", tmp_path, seed=3)
    assert "\n" not in str(info.value)

    torch.save({"format": "something else", "state_dict": r18_state}, path)
    with pytest.raises(InputError, match=r"is corrupt \(ValueError: format 'something else'"):
        synthetic_backbone_state("resnet18", tmp_path, seed=3)

    torch.save({"format": SYNTHETIC_FORMAT, "backbone": "resnet18", "state_dict": r18_state}, path)
    assert _equal(synthetic_backbone_state("resnet18", tmp_path, seed=3), r18_state)

"""The loss registry: names, lookup, specs consistent with their functions."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from focalbench.losses import LOSSES, LossSpec, get_loss, register_loss, sigmoid_focal_loss
from focalbench.losses.registry import KINDS, TARGETS

EXPECTED = {"focal", "softmax_focal", "bce", "ce", "qfl", "vfl", "dfl", "poly1", "ghmc"}


def test_registered_names():
    assert set(LOSSES) == EXPECTED
    assert all(name == spec.name for name, spec in LOSSES.items())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_spec_matches_its_function(name):
    spec = LOSSES[name]
    assert spec.kind in KINDS and spec.target in TARGETS
    assert spec.summary and spec.paper
    signature = inspect.signature(spec.fn).parameters
    for param, default in spec.params.items():
        assert signature[param].default == default, f"{name}.{param} default drifted from fn"
    assert "reduction" in signature


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_loss_runs_with_its_defaults(name):
    spec = LOSSES[name]
    N, C = 4, 5
    x = torch.randn(N, C, requires_grad=True)
    if spec.target in ("binary", "iou"):
        target = torch.zeros(N, C)
        target[torch.arange(N), torch.tensor([0, 1, 2, 3])] = torch.tensor([1.0, 0.8, 0.5, 1.0])
    elif spec.target == "label":
        target = torch.tensor([0, 4, 2, 1])
    else:  # distance in [0, C-1]
        target = torch.tensor([0.0, 1.5, 3.9, 4.0])
    loss = spec.fn(x, target, **spec.params, reduction="sum")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("name, key", [("Focal", "focal"), ("QFL", "qfl"), ("vfl", "vfl")])
def test_get_loss_is_case_insensitive(name, key):
    assert get_loss(name) is LOSSES[key]


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError) as info:
        get_loss("Poly")
    assert str(info.value) == f"unknown loss 'Poly'; choose from {sorted(LOSSES)}"


def test_duplicate_name_raises():
    spec = LossSpec("focal", sigmoid_focal_loss, "sigmoid", "binary", {"gamma": 1.0})
    with pytest.raises(ValueError, match="'focal' is already registered"):
        register_loss(spec)
    assert LOSSES["focal"].params["gamma"] == 2.0


def test_spec_is_frozen_and_validated():
    spec = LOSSES["focal"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.params["gamma"] = 0.0  # type: ignore[index]
    with pytest.raises(ValueError, match="kind must be one of"):
        LossSpec("x", sigmoid_focal_loss, "dense", "binary")
    with pytest.raises(ValueError, match="target must be one of"):
        LossSpec("x", sigmoid_focal_loss, "sigmoid", "mask")
    with pytest.raises(ValueError, match=r"params \['beta'\] are not arguments"):
        LossSpec("x", sigmoid_focal_loss, "sigmoid", "binary", {"beta": 2.0})


def test_papers_cite_arxiv_ids():
    assert "1708.02002" in LOSSES["focal"].paper and "1708.02002" in LOSSES["softmax_focal"].paper
    assert "2006.04388" in LOSSES["qfl"].paper and "2006.04388" in LOSSES["dfl"].paper
    assert "2008.13367" in LOSSES["vfl"].paper

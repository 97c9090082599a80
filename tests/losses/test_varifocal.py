"""Varifocal loss against a naive float64 formula and hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from focalbench.losses import _common, varifocal_loss
from tests.losses import reference
from tests.losses.test_gfl import iou_targets, logits, value_and_grad

REDUCTIONS = ["none", "sum", "mean"]


@pytest.fixture(autouse=True)
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_common, "CPU_CHUNK", 7)  # cross chunk boundaries in every test


@pytest.mark.parametrize("iou_weighted", [True, False])
@pytest.mark.parametrize("alpha, gamma", [(0.75, 2.0), (0.25, 0.0), (1.0, 0.5), (0.0, 1.0)])
def test_vfl_matches_formula(alpha, gamma, iou_weighted):
    x, q = logits((9, 6), seed=4), iou_targets(9, 6, seed=4)
    q[0, 0] = 1.0  # a perfect box
    ours, g_ours = value_and_grad(varifocal_loss, x, q, alpha, gamma, iou_weighted)
    ref, g_ref = value_and_grad(reference.varifocal, x, q, alpha, gamma, iou_weighted)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-14)
    for reduction, expected in (("sum", ref.sum()), ("mean", ref.mean())):
        got = varifocal_loss(x, q, alpha, gamma, iou_weighted, reduction)
        torch.testing.assert_close(got, expected)


def test_vfl_hand_computed():
    # x = log 3 -> p = 0.75.
    # positive q = 0.5: q * BCE = 0.5 * -(0.5 log 0.75 + 0.5 log 0.25) = 0.5 * 0.8369882 = 0.4184941
    # negative q = 0: alpha p^2 (-log 0.25) = 0.75 * 0.5625 * 1.3862944 = 0.5848429
    x = torch.full((1, 2), math.log(3.0), dtype=torch.float64)
    q = torch.tensor([[0.5, 0.0]], dtype=torch.float64)
    loss = varifocal_loss(x, q, alpha=0.75, gamma=2.0)
    torch.testing.assert_close(loss, torch.tensor([[0.4184941, 0.5848429]], dtype=torch.float64))
    # iou_weighted=False: the positive is plain BCE(x, 0.5) = 0.8369882
    loss = varifocal_loss(x, q, alpha=0.75, gamma=2.0, iou_weighted=False)
    torch.testing.assert_close(loss, torch.tensor([[0.8369882, 0.5848429]], dtype=torch.float64))


def test_vfl_positives_only_is_iou_weighted_bce():
    x = logits((4, 3), dtype=torch.float32)
    q = torch.rand(4, 3, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05  # all > 0
    ours, g_ours = value_and_grad(varifocal_loss, x, q)
    bce = F.binary_cross_entropy_with_logits(x, q, weight=q, reduction="none")
    (g_bce,) = torch.autograd.grad(bce.sum(), x)
    torch.testing.assert_close(ours, bce)
    torch.testing.assert_close(g_ours, g_bce)


def test_vfl_iou_target_gets_no_gradient():
    x, q = logits((3, 4)), iou_targets(3, 4).requires_grad_()
    varifocal_loss(x, q, reduction="sum").backward()
    assert q.grad is None and x.grad is not None


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha, gamma", [(0.75, 2.0), (0.5, 0.5)])
def test_vfl_gradcheck(alpha, gamma, reduction):
    x, q = logits((3, 4), scale=2.0), iou_targets(3, 4, seed=3)
    fn = lambda z: varifocal_loss(z, q, alpha, gamma, reduction=reduction)  # noqa: E731
    assert torch.autograd.gradcheck(fn, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_vfl_finite_at_extreme_logits(gamma, dtype):
    x = torch.tensor([[17.0, 30.0, -30.0, 100.0, -100.0, 100.0, -100.0]], dtype=dtype)
    q = torch.tensor([[1.0, 0.9, 0.0, 1.0, 0.0, 0.0, 0.7]], dtype=dtype)
    x.requires_grad_()
    loss, grad = value_and_grad(varifocal_loss, x, q, 0.75, gamma)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert loss[0, 5].item() == pytest.approx(75.0)  # negative at x = 100: 0.75 * 1 * 100
    assert loss[0, 6].item() == pytest.approx(0.7 * 0.7 * 100.0, rel=1e-2)  # 0.7 * BCE(-100, 0.7)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_inputs(reduction):
    x = torch.zeros(0, 6, requires_grad=True)
    loss = varifocal_loss(x, torch.zeros(0, 6), reduction=reduction)
    assert loss.shape == ((0, 6) if reduction == "none" else ())
    if reduction != "none":
        assert loss.item() == 0.0
    loss.sum().backward()


def test_vfl_label_vector_is_rejected():
    x = logits((3, 4))
    with pytest.raises(ValueError, match=r"targets must be \[N, C\] one-hot-shaped IoU scores"):
        varifocal_loss(x, torch.tensor([0, 2, 1]))
    with pytest.raises(ValueError, match="one-hot-shaped IoU scores"):
        varifocal_loss(x, torch.zeros(3, 4, dtype=torch.long))  # integer one-hot: no IoU in it


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": 1.2}, r"alpha.*1\.2"),
        ({"alpha": -0.1}, r"alpha.*-0\.1"),
        ({"gamma": -0.5}, r"gamma.*-0\.5"),
        ({"reduction": "avg"}, r"reduction.*\['none', 'sum', 'mean'\]"),
    ],
)
def test_vfl_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        varifocal_loss(logits((2, 3)), iou_targets(2, 3), **kwargs)

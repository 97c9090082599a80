"""Quality and Distribution Focal Loss against naive float64 formulas and hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from focalbench.losses import _common, distribution_focal_loss, quality_focal_loss
from tests.losses import reference

REDUCTIONS = ["none", "sum", "mean"]


@pytest.fixture(autouse=True)
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_common, "CPU_CHUNK", 7)  # cross chunk boundaries in every test


def iou_targets(n, c, seed=0, dtype=torch.float64):
    """[N, C] with an IoU in (0, 1) at one class for ~half the rows, 0 elsewhere."""
    g = torch.Generator().manual_seed(seed)
    t = torch.zeros(n, c, dtype=torch.float64)
    rows = torch.arange(n)[torch.rand(n, generator=g) < 0.5]
    t[rows, torch.randint(0, c, (len(rows),), generator=g)] = torch.rand(
        len(rows), generator=g, dtype=torch.float64
    )
    return t.to(dtype)


def logits(shape, seed=0, scale=3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype).requires_grad_()


def value_and_grad(fn, x, *args, **kwargs):
    loss = fn(x, *args, **kwargs)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss, grad


# ---- QFL ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 2.0, 3.0])
def test_qfl_matches_formula(beta):
    x, y = logits((9, 6), seed=1), iou_targets(9, 6, seed=1)
    ours, g_ours = value_and_grad(quality_focal_loss, x, y, beta)
    ref, g_ref = value_and_grad(reference.quality_focal, x, y, beta)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-14)
    for reduction, expected in (("sum", ref.sum()), ("mean", ref.mean())):
        torch.testing.assert_close(quality_focal_loss(x, y, beta, reduction), expected)


def test_qfl_hand_computed():
    # x = log 3 -> s = 0.75, y = 0.25: |y - s|^2 = 0.25,
    #   BCE = -(0.25 log 0.75 + 0.75 log 0.25) = 0.0719205 + 1.0397208 = 1.1116413 -> 0.2779103
    # x = 0 -> s = 0.5, y = 1: |0.5|^2 = 0.25, BCE = log 2 -> 0.25 * 0.6931472 = 0.1732868
    x = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    y = torch.tensor([[0.25, 1.0]], dtype=torch.float64)
    loss = quality_focal_loss(x, y, beta=2.0)
    torch.testing.assert_close(loss, torch.tensor([[0.2779103, 0.1732868]], dtype=torch.float64))


def test_qfl_beta0_is_soft_bce():
    x, y = logits((5, 4), dtype=torch.float32), iou_targets(5, 4, dtype=torch.float32)
    ours, g_ours = value_and_grad(quality_focal_loss, x, y, 0.0)
    bce, g_bce = value_and_grad(F.binary_cross_entropy_with_logits, x, y, reduction="none")
    torch.testing.assert_close(ours, bce)
    torch.testing.assert_close(g_ours, g_bce)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_qfl_gradcheck(beta, reduction):
    x, y = logits((3, 4), scale=2.0), iou_targets(3, 4, seed=2)
    assert torch.autograd.gradcheck(lambda z: quality_focal_loss(z, y, beta, reduction), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("beta", [0.25, 0.5, 2.0])
def test_qfl_finite_at_extreme_logits(beta, dtype):
    x = torch.tensor([17.0, 30.0, -30.0, 100.0, -100.0, 100.0, -100.0, 0.0], dtype=dtype)
    y = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.5], dtype=dtype)
    x, y = x[None].requires_grad_(), y[None]  # [1, 8]
    loss, grad = value_and_grad(quality_focal_loss, x, y, beta)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert loss[0, 5].item() == pytest.approx(100.0) and loss[0, 6].item() == pytest.approx(100.0)
    assert grad[0, 7].item() == 0.0  # p == y exactly: the loss is at its minimum


def test_qfl_float32_positives_keep_precision():
    # y = 1, x = 17: |1 - s| = sigmoid(-17) = 4.14e-8, which 1 - sigmoid(17) rounds to 0 in float32
    x = torch.tensor([[17.0]], requires_grad=True)
    y = torch.tensor([[1.0]])
    loss, grad = value_and_grad(quality_focal_loss, x, y, 1.0)
    q = 1.0 / (1.0 + math.exp(17.0))
    assert loss.item() == pytest.approx(q * math.log1p(math.exp(-17.0)), rel=1e-4)
    assert grad.item() < 0


# ---- DFL ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bins", [2, 5, 17])
def test_dfl_matches_formula(bins):
    x = logits((7, bins), seed=bins)
    target = torch.tensor(
        [0.0, bins - 1.0, 0.5, (bins - 1) / 3, bins - 1.5, 1.0, 0.999], dtype=torch.float64
    )
    ours, g_ours = value_and_grad(distribution_focal_loss, x, target)
    ref, g_ref = value_and_grad(reference.distribution_focal, x, target)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_ours, g_ref)
    torch.testing.assert_close(distribution_focal_loss(x, target, "mean"), ref.mean())
    torch.testing.assert_close(distribution_focal_loss(x, target, "sum"), ref.sum())


def test_dfl_hand_computed():
    # logits [0, log 2, log 3] -> S = [1/6, 2/6, 3/6]
    # y = 1.5: -(0.5 log(2/6) + 0.5 log(3/6)) = 0.5 (1.0986123 + 0.6931472) = 0.8958797
    # y = 2 = B-1 (mmdet would raise here): -log(3/6) = 0.6931472
    # y = 0: -log(1/6) = 1.7917595
    x = torch.tensor([[0.0, math.log(2.0), math.log(3.0)]], dtype=torch.float64).expand(3, 3)
    loss = distribution_focal_loss(x, torch.tensor([1.5, 2.0, 0.0], dtype=torch.float64))
    expected = torch.tensor([0.8958797, 0.6931472, 1.7917595], dtype=torch.float64)
    torch.testing.assert_close(loss, expected)


def test_dfl_integer_target_is_cross_entropy():
    x = logits((6, 5), seed=3, dtype=torch.float32)
    target = torch.tensor([0, 1, 2, 3, 4, 4])
    ours = distribution_focal_loss(x, target.float())
    torch.testing.assert_close(ours, F.cross_entropy(x, target, reduction="none"))


def test_dfl_gradcheck():
    x = logits((4, 4), scale=2.0)
    target = torch.tensor([0.0, 1.25, 2.5, 3.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: distribution_focal_loss(z, target, "mean"), x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dfl_half_precision(dtype):
    x = logits((3, 8), scale=30.0, dtype=dtype)
    loss, grad = value_and_grad(distribution_focal_loss, x, torch.tensor([0.0, 3.5, 7.0]))
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("bad", [-0.1, 4.01, float("nan"), 100.0])
def test_dfl_target_out_of_range_raises(bad):
    x = logits((2, 5))
    with pytest.raises(ValueError, match=r"target must lie in \[0, B-1\] = \[0, 4\]"):
        distribution_focal_loss(x, torch.tensor([1.0, bad], dtype=torch.float64))


def test_dfl_shape_errors():
    with pytest.raises(ValueError, match="B >= 2"):
        distribution_focal_loss(logits((2, 1)), torch.zeros(2))
    with pytest.raises(ValueError, match=r"target must be \[N\] = \[2\]"):
        distribution_focal_loss(logits((2, 4)), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="reduction"):
        distribution_focal_loss(logits((2, 4)), torch.zeros(2), reduction="all")


# ---- shared: empty inputs and argument errors ----------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_inputs(reduction):
    x = torch.zeros(0, 6, requires_grad=True)
    for loss in (
        quality_focal_loss(x, torch.zeros(0, 6), reduction=reduction),
        distribution_focal_loss(x, torch.zeros(0), reduction),
    ):
        if reduction == "none":
            assert loss.shape[0] == 0
        else:
            assert loss.shape == () and loss.item() == 0.0
        loss.sum().backward()


def test_qfl_errors():
    x, y = logits((3, 4)), iou_targets(3, 4)
    with pytest.raises(ValueError, match=r"beta.*-1\.0"):
        quality_focal_loss(x, y, beta=-1.0)
    with pytest.raises(ValueError, match=r"reduction.*'avg'"):
        quality_focal_loss(x, y, reduction="avg")
    with pytest.raises(ValueError, match=r"targets must be \[N, C\] one-hot-shaped IoU scores"):
        quality_focal_loss(x, torch.tensor([0, 1, 3]))

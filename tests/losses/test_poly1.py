"""focalbench.losses.poly against the Poly-1 formula in float64, torchvision and the focal loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as tv_sigmoid_focal_loss

from focalbench.losses import _common, poly1_focal_loss, sigmoid_focal_loss
from tests.losses.test_focal import make_inputs, value_and_grad

REDUCTIONS = ["none", "sum", "mean"]
PER_CLASS = [0.1, 0.9, 0.25, 0.0, 1.0]  # C = 5
ALPHAS = [0.25, None, -1.0, PER_CLASS]


@pytest.fixture(autouse=True)
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 5 elements in the focal part: chunk boundaries crossed, rows of C = 5 whole."""
    monkeypatch.setattr(_common, "CPU_CHUNK", 5)


def poly1_formula(x, t, alpha, gamma, epsilon):
    """Leng et al. eq. (4) with torchvision's focal term: alpha_t weights the focal term only.
    Plain float64 ops, valid for moderate |x| (1 - p underflows / log(1 - p) overflows beyond)."""
    p = torch.sigmoid(x)
    ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    focal = (1 - p_t) ** gamma * ce
    if isinstance(alpha, list) or (alpha is not None and alpha >= 0):
        a = torch.as_tensor(alpha, dtype=x.dtype)  # scalar or [C], broadcast over the last dim
        focal = (a * t + (1 - a) * (1 - t)) * focal
    return focal + epsilon * (1 - p_t) ** (gamma + 1)


def poly1_logspace(x, t, alpha, gamma, epsilon):
    """The same for t in {0, 1} at any |x|: with z = x (t = 1) or -x (t = 0),
    log p_t = logsigmoid(z) and log(1 - p_t) = logsigmoid(-z)."""
    z = torch.where(t > 0.5, x, -x)
    log_m = F.logsigmoid(-z)
    loss = -torch.exp(gamma * log_m) * F.logsigmoid(z)
    if alpha is not None and alpha >= 0:
        loss = torch.where(t > 0.5, alpha, 1.0 - alpha) * loss
    return loss + epsilon * torch.exp((gamma + 1) * log_m)


def reduced(loss, reduction):
    return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("epsilon", [1.0, -1.0, 2.5])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", ALPHAS, ids=["0.25", "None", "-1", "per_class"])
def test_matches_formula(alpha, gamma, epsilon, soft):
    x, t = make_inputs((9, 5), seed=int(10 * gamma), soft=soft)
    for reduction in REDUCTIONS:
        ours, g_ours = value_and_grad(poly1_focal_loss, x, t, alpha, gamma, epsilon, reduction)
        ref, g_ref = value_and_grad(
            lambda z, r=reduction: reduced(poly1_formula(z, t, alpha, gamma, epsilon), r), x
        )
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-14)


def test_hand_computed():
    # x = 0, t = 1: p_t = 0.5; focal 0.25 * 0.5^2 * log 2 = 0.0433217; poly 1 * 0.5^3 = 0.125
    # x = log 3, t = 0: p_t = 0.25; focal 0.75 * 0.75^2 * log 4 = 0.5848429;
    #   poly 0.75^3 = 0.421875 (epsilon = 1), -0.421875 (epsilon = -1)
    x = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64)
    t = torch.tensor([1.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(
        poly1_focal_loss(x, t, 0.25, 2.0, 1.0),
        torch.tensor([0.1683217, 0.5848429 + 0.421875], dtype=torch.float64),
    )
    torch.testing.assert_close(
        poly1_focal_loss(x, t, 0.25, 2.0, -1.0),
        torch.tensor([0.0433217 - 0.125, 0.5848429 - 0.421875], dtype=torch.float64),
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1.0, 0.5), (PER_CLASS, 1.0)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_epsilon0_is_exactly_sigmoid_focal(alpha, gamma, reduction, dtype):
    x, t = make_inputs((7, 5), dtype=dtype, seed=3, soft=True)
    ours, g_ours = value_and_grad(poly1_focal_loss, x, t, alpha, gamma, 0.0, reduction)
    focal, g_focal = value_and_grad(sigmoid_focal_loss, x, t, alpha, gamma, reduction)
    assert torch.equal(ours, focal) and torch.equal(g_ours, g_focal)


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1.0, 0.5), (0.75, 1.0), (0.25, 0.0)])
def test_epsilon0_matches_torchvision(alpha, gamma, soft):
    x, t = make_inputs((9, 5), seed=4, soft=soft)
    for reduction in REDUCTIONS:
        ours, g_ours = value_and_grad(poly1_focal_loss, x, t, alpha, gamma, 0.0, reduction)
        tv, g_tv = value_and_grad(tv_sigmoid_focal_loss, x, t, alpha, gamma, reduction)
        torch.testing.assert_close(ours, tv, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(g_ours, g_tv, rtol=1e-10, atol=1e-14)


def test_poly_term_is_not_alpha_weighted():
    x, t = make_inputs((6, 5), seed=5)
    poly = poly1_focal_loss(x, t, 0.25, 2.0, 1.5) - sigmoid_focal_loss(x, t, 0.25, 2.0)
    p_t = torch.sigmoid(x) * t + (1 - torch.sigmoid(x)) * (1 - t)
    torch.testing.assert_close(poly, 1.5 * (1 - p_t) ** 3)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "alpha, gamma, epsilon", [(0.25, 2.0, 1.0), (None, 0.5, -1.0), (PER_CLASS, 1.0, 2.0)]
)
def test_gradcheck(alpha, gamma, epsilon, reduction):
    x, t = make_inputs((3, 5), soft=True, scale=2.0)
    assert torch.autograd.gradcheck(
        lambda z: poly1_focal_loss(z, t, alpha, gamma, epsilon, reduction), x
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("epsilon", [1.0, -1.0])
def test_finite_at_large_logits(dtype, gamma, epsilon):
    big = torch.tensor([100.0, -100.0, 1e4, -1e4, 17.0, -30.0])
    x = big.repeat(3).to(dtype).requires_grad_()  # [18]
    t = torch.tensor([1.0, 0.0, 0.3]).repeat_interleave(6).to(dtype)
    loss, grad = value_and_grad(poly1_focal_loss, x, t, 0.25, gamma, epsilon)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    hard = t != 0.3
    x64 = x.detach().double().requires_grad_()
    ref, g_ref = value_and_grad(poly1_logspace, x64, t.double(), 0.25, gamma, epsilon)
    torch.testing.assert_close(loss[hard].double(), ref[hard], rtol=1e-4, atol=1e-30)
    # the gradient comes back in the input dtype: float16 flushes anything below 6e-8 to 0
    atol = 6e-8 if dtype == torch.float16 else 1e-30
    torch.testing.assert_close(grad[hard].double(), g_ref[hard], rtol=1e-2, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(dtype):
    x, t = make_inputs((20, 5), dtype=dtype, scale=12.0)
    loss, grad = value_and_grad(poly1_focal_loss, x, t, PER_CLASS, 0.5, -1.0)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    x32 = x.detach().float().requires_grad_()
    loss32, grad32 = value_and_grad(poly1_focal_loss, x32, t.float(), PER_CLASS, 0.5, -1.0)
    torch.testing.assert_close(loss, loss32)
    torch.testing.assert_close(grad, grad32.to(dtype))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_reductions_and_empty_input(reduction):
    x, t = make_inputs((6, 5), dtype=torch.float32, seed=6)
    none = poly1_focal_loss(x, t, reduction="none")
    torch.testing.assert_close(
        poly1_focal_loss(x, t, reduction=reduction), reduced(none, reduction)
    )
    empty = torch.zeros(0, 5, requires_grad=True)
    loss = poly1_focal_loss(empty, torch.zeros(0, 5), reduction=reduction)
    assert loss.shape == ((0, 5) if reduction == "none" else ()) and loss.sum().item() == 0.0
    loss.sum().backward()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"reduction": "avg"}, r"reduction.*\['none', 'sum', 'mean'\].*'avg'"),
        ({"epsilon": float("nan")}, r"epsilon.*nan"),
        ({"epsilon": float("inf")}, r"epsilon.*inf"),
        ({"alpha": 1.5}, r"alpha.*1\.5"),
        ({"gamma": -1.0}, r"gamma.*-1\.0"),
        ({"alpha": [0.5, 0.5]}, "expected length 5, got 2"),
    ],
)
def test_errors(kwargs, match):
    x, t = make_inputs((2, 5))
    with pytest.raises(ValueError, match=match):
        poly1_focal_loss(x, t, **kwargs)
    with pytest.raises(ValueError, match="targets must have the shape of logits"):
        poly1_focal_loss(x, t[:, :2])

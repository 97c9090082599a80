"""focalbench.losses.focal against torchvision, F.cross_entropy and naive float64 formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as tv_sigmoid_focal_loss

from focalbench.losses import _common, bce_loss, ce_loss, sigmoid_focal_loss, softmax_focal_loss
from tests.losses import reference

ALPHAS = [0.25, -1.0, 0.0, 0.5, 1.0]
GAMMAS = [0.0, 0.5, 1.0, 2.0, 5.0]
REDUCTIONS = ["none", "sum", "mean"]
# torchvision's sigmoid_focal_loss has NaN gradients here at gamma = 0.5 (1 - p_t rounds to 0)
TORCHVISION_NAN_CASES = [(17.0, 1.0), (30.0, 1.0), (-30.0, 0.0), (100.0, 1.0), (-100.0, 0.0)]


@pytest.fixture(autouse=True)
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 7 elements: every test also crosses chunk boundaries and a partial last chunk."""
    monkeypatch.setattr(_common, "CPU_CHUNK", 7)


def make_inputs(shape, dtype=torch.float64, seed=0, soft=False, scale=4.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    u = torch.rand(shape, generator=g, dtype=torch.float64)
    t = u if soft else (u < 0.3).double()
    return x.requires_grad_(), t.to(dtype)


def value_and_grad(fn, x, *args, **kwargs):
    loss = fn(x, *args, **kwargs)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss, grad


# ---- sigmoid focal loss ------------------------------------------------------------------------


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_sigmoid_focal_matches_torchvision(alpha, gamma, soft):
    x, t = make_inputs((9, 5), seed=int(10 * gamma), soft=soft)  # |x| <~ 12: away from NaN region
    for reduction in REDUCTIONS:
        ours, g_ours = value_and_grad(sigmoid_focal_loss, x, t, alpha, gamma, reduction)
        tv, g_tv = value_and_grad(tv_sigmoid_focal_loss, x, t, alpha, gamma, reduction)
        torch.testing.assert_close(ours, tv, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(g_ours, g_tv, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1.0, 0.5), (0.75, 1.0)])
def test_sigmoid_focal_float32_matches_torchvision(alpha, gamma):
    x, t = make_inputs((40, 7), dtype=torch.float32, seed=3)
    ours, g_ours = value_and_grad(sigmoid_focal_loss, x, t, alpha, gamma)
    tv, g_tv = value_and_grad(tv_sigmoid_focal_loss, x, t, alpha, gamma)
    torch.testing.assert_close(ours, tv, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g_ours, g_tv, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("alpha", [None, 0.3])
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_closed_form_gradient_matches_autograd_of_formula(alpha, gamma):
    x, t = make_inputs((6, 11), seed=5, soft=True)
    ours, g_ours = value_and_grad(sigmoid_focal_loss, x, t, alpha, gamma)
    ref, g_ref = value_and_grad(reference.sigmoid_focal, x, t, alpha, gamma)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("alpha", [None, -1.0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gamma0_alpha_off_is_bce(alpha, reduction):
    x, t = make_inputs((8, 6), dtype=torch.float32, soft=True)
    ours, g_ours = value_and_grad(sigmoid_focal_loss, x, t, alpha, 0.0, reduction)
    bce, g_bce = value_and_grad(F.binary_cross_entropy_with_logits, x, t, reduction=reduction)
    torch.testing.assert_close(ours, bce, rtol=1e-5, atol=1e-6)  # float32 rounding only
    torch.testing.assert_close(g_ours, g_bce, rtol=1e-5, atol=1e-6)


def test_sigmoid_focal_hand_computed():
    # x = 0, t = 1: p = 0.5, BCE = log 2, (1 - p_t)^2 = 0.25, alpha_t = 0.25
    #   -> 0.25 * 0.25 * 0.693147 = 0.0433217
    # x = log 3, t = 0: p = 0.75, p_t = 0.25, BCE = -log 0.25 = 1.386294, (1 - p_t)^2 = 0.5625,
    #   alpha_t = 0.75 -> 0.75 * 0.5625 * 1.386294 = 0.5848429
    x = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64)
    t = torch.tensor([1.0, 0.0], dtype=torch.float64)
    loss = sigmoid_focal_loss(x, t, alpha=0.25, gamma=2.0)
    torch.testing.assert_close(loss, torch.tensor([0.0433217, 0.5848429], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("x0, t0", TORCHVISION_NAN_CASES)
def test_finite_where_torchvision_gradient_is_nan(x0, t0, dtype):
    x = torch.tensor([x0], dtype=dtype, requires_grad=True)
    t = torch.tensor([t0], dtype=dtype)
    loss, grad = value_and_grad(sigmoid_focal_loss, x, t, 0.25, 0.5)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    x64 = x.detach().double().requires_grad_()
    ref, g_ref = value_and_grad(reference.sigmoid_focal_logspace, x64, t.double(), 0.25, 0.5)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-4, atol=1e-30)
    # the gradient comes back in the input dtype: float16 flushes anything below 6e-8 to 0
    atol = 6e-8 if dtype == torch.float16 else 1e-30
    torch.testing.assert_close(grad.double(), g_ref, rtol=1e-2, atol=atol)


@pytest.mark.parametrize("gamma", [0.1, 0.5, 0.9])
def test_finite_for_gamma_below_one_up_to_logit_100(gamma):
    x = torch.linspace(-100, 100, 801).repeat(3).requires_grad_()
    t = torch.tensor([0.0, 1.0, 0.3]).repeat_interleave(801)
    loss, grad = value_and_grad(sigmoid_focal_loss, x, t, 0.25, gamma)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    hard = t != 0.3
    x64 = x.detach().double().requires_grad_()
    ref, g_ref = value_and_grad(reference.sigmoid_focal_logspace, x64, t.double(), 0.25, gamma)
    torch.testing.assert_close(loss[hard].double(), ref[hard], rtol=1e-4, atol=1e-12)
    torch.testing.assert_close(grad[hard].double(), g_ref[hard], rtol=1e-4, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_half_precision_inputs(dtype, gamma):
    x, t = make_inputs((20, 9), dtype=dtype, scale=12.0)
    with torch.no_grad():
        x[0, :4] = torch.tensor([60000.0 if dtype == torch.float16 else 1e30, -100.0, 100.0, 0.0])
    loss, grad = value_and_grad(sigmoid_focal_loss, x, t, 0.25, gamma)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    x32 = x.detach().float().requires_grad_()
    loss32, grad32 = value_and_grad(sigmoid_focal_loss, x32, t.float(), 0.25, gamma)
    torch.testing.assert_close(loss, loss32)  # same float32 math on the same values
    torch.testing.assert_close(grad, grad32.to(dtype))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (None, 0.5), (0.6, 0.0), (0.25, 1.0)])
def test_sigmoid_focal_gradcheck(alpha, gamma, reduction):
    x, t = make_inputs((3, 4), soft=True, scale=2.0)
    assert torch.autograd.gradcheck(lambda z: sigmoid_focal_loss(z, t, alpha, gamma, reduction), x)


def test_chunking_does_not_change_results(monkeypatch):
    x, t = make_inputs((13, 11), dtype=torch.float16, seed=2, soft=True)
    small, g_small = value_and_grad(sigmoid_focal_loss, x, t, 0.25, 2.0, "mean")
    monkeypatch.setattr(_common, "CPU_CHUNK", 1 << 16)
    big, g_big = value_and_grad(sigmoid_focal_loss, x, t, 0.25, 2.0, "mean")
    torch.testing.assert_close(small, big)
    torch.testing.assert_close(g_small, g_big)


def test_no_grad_path_retain_graph_and_layouts():
    x, t = make_inputs((5, 8), dtype=torch.float32, seed=4)
    with torch.no_grad():
        plain = sigmoid_focal_loss(x, t)
    loss = sigmoid_focal_loss(x, t, reduction="sum")
    torch.testing.assert_close(loss, plain.sum())
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()  # a second backward must add the same gradient again
    torch.testing.assert_close(x.grad, 2 * first)
    # non-contiguous logits and bool / int one-hot targets
    xt = x.detach().t().requires_grad_()
    out = sigmoid_focal_loss(xt, t.t().bool())
    torch.testing.assert_close(out, plain.t())
    torch.testing.assert_close(sigmoid_focal_loss(x.detach(), t.long()), plain)


# ---- softmax focal loss, CE, BCE ---------------------------------------------------------------


def make_labels(n, c, seed=0, ignore=()):
    labels = torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))
    for i in ignore:
        labels[i] = -100
    return labels


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_softmax_focal_gamma0_is_cross_entropy(reduction):
    x, _ = make_inputs((10, 4))
    labels = make_labels(10, 4, ignore=(1, 7))
    ours, g_ours = value_and_grad(softmax_focal_loss, x, labels, None, 0.0, reduction)
    ce, g_ce = value_and_grad(F.cross_entropy, x, labels, reduction=reduction)
    torch.testing.assert_close(ours, ce)
    torch.testing.assert_close(g_ours, g_ce)
    torch.testing.assert_close(ce_loss(x, labels, reduction), ce)


@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_softmax_focal_per_class_alpha_gamma0_is_weighted_cross_entropy(reduction):
    x, _ = make_inputs((10, 4), seed=1)
    labels = make_labels(10, 4, seed=1, ignore=(3,))
    alpha = [0.1, 0.4, 0.9, 1.0]
    ours = softmax_focal_loss(x, labels, alpha, 0.0, reduction)
    ce = F.cross_entropy(x, labels, weight=torch.tensor(alpha, dtype=x.dtype), reduction=reduction)
    torch.testing.assert_close(ours, ce)


@pytest.mark.parametrize("alpha", [None, 0.25, [0.1, 0.4, 0.9, 1.0, 0.5]])
@pytest.mark.parametrize("gamma", [0.5, 2.0, 5.0])
def test_softmax_focal_matches_formula(alpha, gamma):
    x, _ = make_inputs((8, 5), seed=2)
    labels = make_labels(8, 5, seed=2, ignore=(4,))
    ours, g_ours = value_and_grad(softmax_focal_loss, x, labels, alpha, gamma)
    ref, g_ref = value_and_grad(reference.softmax_focal, x, labels, alpha, gamma, -100)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(g_ours, g_ref)
    mean = softmax_focal_loss(x, labels, alpha, gamma, "mean")
    torch.testing.assert_close(mean, ref.sum() / 7)  # mean over the 7 non-ignored rows


def test_softmax_focal_hand_computed():
    # logits [0, log 3] -> p = [0.25, 0.75]; label 1, gamma 2: -(0.25)^2 log 0.75 = 0.0179801
    x = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    loss = softmax_focal_loss(x, torch.tensor([1]), gamma=2.0)
    torch.testing.assert_close(loss, torch.tensor([0.0179801], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_softmax_focal_finite_when_p_y_rounds_to_one(dtype):
    x = torch.tensor([[100.0, 0.0, -100.0], [0.0, 30.0, 0.0], [-5.0, 5.0, 17.0]], dtype=dtype)
    x.requires_grad_()
    loss, grad = value_and_grad(softmax_focal_loss, x, torch.tensor([0, 1, 2]), None, 0.5)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("alpha, gamma", [(None, 2.0), ([0.2, 0.7, 0.5], 0.5)])
def test_softmax_focal_gradcheck(alpha, gamma):
    x, _ = make_inputs((4, 3), scale=2.0)
    labels = torch.tensor([0, 2, -100, 1])
    assert torch.autograd.gradcheck(lambda z: softmax_focal_loss(z, labels, alpha, gamma), x)


def test_bce_loss_matches_torch():
    x, t = make_inputs((6, 3), dtype=torch.float16, soft=True)
    loss = bce_loss(x, t, "sum")
    assert loss.dtype == torch.float32
    ref = F.binary_cross_entropy_with_logits(x.float(), t.float(), reduction="sum")
    torch.testing.assert_close(loss, ref)


# ---- empty inputs and argument errors ----------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_inputs(reduction):
    x = torch.zeros(0, 5, requires_grad=True)
    t = torch.zeros(0, 5)
    labels = torch.zeros(0, dtype=torch.long)
    for loss in (
        sigmoid_focal_loss(x, t, reduction=reduction),
        bce_loss(x, t, reduction),
        softmax_focal_loss(x, labels, reduction=reduction),
        ce_loss(x, labels, reduction),
    ):
        if reduction == "none":
            assert loss.shape[0] == 0
        else:
            assert loss.shape == () and loss.item() == 0.0  # 0, not NaN
        loss.sum().backward()


def test_all_ignored_mean_is_zero():
    x, _ = make_inputs((3, 4))
    labels = torch.full((3,), -100)
    assert softmax_focal_loss(x, labels, reduction="mean").item() == 0.0
    assert ce_loss(x, labels, "mean").item() == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"reduction": "avg"}, r"reduction.*\['none', 'sum', 'mean'\].*'avg'"),
        ({"alpha": 1.5}, r"alpha.*1\.5"),
        ({"alpha": float("nan")}, r"alpha.*nan"),
        ({"gamma": -1.0}, r"gamma.*-1\.0"),
    ],
)
def test_sigmoid_focal_errors(kwargs, match):
    x, t = make_inputs((2, 3))
    with pytest.raises(ValueError, match=match):
        sigmoid_focal_loss(x, t, **kwargs)


def test_shape_and_label_errors():
    x, t = make_inputs((2, 3))
    with pytest.raises(ValueError, match="targets must have the shape of logits"):
        sigmoid_focal_loss(x, t[:, :2])
    labels = torch.tensor([0, 2])
    with pytest.raises(ValueError, match="expected length 3, got 2"):
        softmax_focal_loss(x, labels, alpha=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"alpha.*\[0, 1\]"):
        softmax_focal_loss(x, labels, alpha=[0.5, 0.5, 2.0])
    with pytest.raises(ValueError, match=r"alpha.*-0\.5"):
        softmax_focal_loss(x, labels, alpha=-0.5)
    with pytest.raises(ValueError, match=r"gamma.*-2"):
        softmax_focal_loss(x, labels, gamma=-2)
    with pytest.raises(ValueError, match="reduction"):
        softmax_focal_loss(x, labels, reduction="batch")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        softmax_focal_loss(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="C >= 2"):
        softmax_focal_loss(x[:, :1], labels)
    with pytest.raises(ValueError, match="reduction"):
        ce_loss(x, labels, reduction="max")


# ---- sigmoid focal loss with a per-class alpha [C] ---------------------------------------------


def per_class_formula(x, t, alpha, gamma):
    """FL = -alpha_t (1 - p_t)^gamma log p_t with alpha_t = alpha_c t + (1 - alpha_c)(1 - t),
    alpha [C] broadcast over the last dimension; BCE as the log term (soft targets), float64."""
    a = torch.as_tensor(alpha, dtype=x.dtype)
    p = torch.sigmoid(x)
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = a * t + (1 - a) * (1 - t)
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    return alpha_t * (1 - p_t) ** gamma * bce


PER_CLASS = [0.1, 0.9, 0.25, 0.0, 1.0]  # C = 5, both ends of [0, 1] included


@pytest.mark.parametrize("shape", [(9, 5), (2, 7, 5)])  # [N, C] and [B, N, C]
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_per_class_alpha_matches_formula(shape, soft, gamma):
    x, t = make_inputs(shape, seed=7, soft=soft)  # chunks of 7 -> 5: rows never split
    for reduction in REDUCTIONS:
        ours, g_ours = value_and_grad(sigmoid_focal_loss, x, t, PER_CLASS, gamma, reduction)
        ref = per_class_formula(x, t, PER_CLASS, gamma)
        ref = {"none": ref, "sum": ref.sum(), "mean": ref.mean()}[reduction]
        (g_ref,) = torch.autograd.grad(ref.sum(), x)
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-14)


def test_per_class_alpha_is_torchvision_column_by_column():
    x, t = make_inputs((11, 5), seed=8)
    ours = sigmoid_focal_loss(x, t, torch.tensor(PER_CLASS, dtype=torch.float64), 2.0)
    for c, a in enumerate(PER_CLASS):
        tv = tv_sigmoid_focal_loss(x[:, c], t[:, c], a, 2.0)
        torch.testing.assert_close(ours[:, c], tv, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("alpha", [0.25, 0.6])
def test_constant_per_class_alpha_equals_the_float(alpha, dtype):
    x, t = make_inputs((13, 4), dtype=dtype, seed=9, soft=True)
    scalar, g_scalar = value_and_grad(sigmoid_focal_loss, x, t, alpha, 2.0, "none")
    for per_class in ([alpha] * 4, torch.full((4,), alpha), (alpha,) * 4):
        listed, g_listed = value_and_grad(sigmoid_focal_loss, x, t, per_class, 2.0, "none")
        torch.testing.assert_close(listed, scalar)  # float32: ~1 ulp (a fused op less or more)
        torch.testing.assert_close(g_listed, g_scalar)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_per_class_alpha_gradcheck(gamma, reduction):
    x, t = make_inputs((3, 4), soft=True, scale=2.0)
    alpha = [0.1, 0.5, 0.75, 1.0]
    assert torch.autograd.gradcheck(lambda z: sigmoid_focal_loss(z, t, alpha, gamma, reduction), x)


def test_per_class_alpha_chunking_layouts_and_dtypes(monkeypatch):
    x, t = make_inputs((13, 5), dtype=torch.float32, seed=10, soft=True)
    small, g_small = value_and_grad(sigmoid_focal_loss, x, t, PER_CLASS, 2.0, "mean")
    monkeypatch.setattr(_common, "CPU_CHUNK", 1 << 16)
    big, g_big = value_and_grad(sigmoid_focal_loss, x, t, PER_CLASS, 2.0, "mean")
    torch.testing.assert_close(small, big)
    torch.testing.assert_close(g_small, g_big)
    plain = sigmoid_focal_loss(x.detach(), t, PER_CLASS)
    # non-contiguous logits: the class is still the last dimension of the view
    xt = x.detach().t().contiguous().t()
    torch.testing.assert_close(sigmoid_focal_loss(xt, t, PER_CLASS), plain)
    # half precision is computed in float32 with the same weights
    half = sigmoid_focal_loss(x.detach().half(), t.half(), PER_CLASS)
    ref = sigmoid_focal_loss(x.detach().half().float(), t.half().float(), PER_CLASS)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, ref)
    # empty input: [0, C]
    empty = torch.zeros(0, 5, requires_grad=True)
    assert sigmoid_focal_loss(empty, torch.zeros(0, 5), PER_CLASS, reduction="sum").item() == 0.0


@pytest.mark.parametrize(
    "alpha, match",
    [
        ([0.5, 0.5], "expected length 3, got 2"),
        ([0.5, 1.5, 0.5], r"alpha: per-class weights must lie in \[0, 1\]"),
        ([0.5, -0.1, 0.5], r"alpha: per-class weights must lie in \[0, 1\]"),
        ([0.5, float("nan"), 0.5], r"alpha: per-class weights must lie in \[0, 1\]"),
    ],
)
def test_per_class_alpha_errors(alpha, match):
    x, t = make_inputs((2, 3))
    with pytest.raises(ValueError, match=match):
        sigmoid_focal_loss(x, t, alpha)
    with pytest.raises(ValueError, match="a per-class alpha needs logits"):
        sigmoid_focal_loss(torch.tensor(0.5), torch.tensor(1.0), [0.5])

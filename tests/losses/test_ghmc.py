"""focalbench.losses.ghm against mmdetection's GHMC definition, recomputed by a loop over bins."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from focalbench.losses import ghmc_init_state, ghmc_loss

REDUCTIONS = ["none", "sum", "mean"]


def make_batch(shape=(12, 5), seed=0, dtype=torch.float64, scale=3.0, ignore=0.2):
    """Logits, one-hot-like targets and label weights with about `ignore` of them 0 (ignored)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)
    t = (torch.rand(shape, generator=g) < 0.25).to(dtype)
    label_weight = (torch.rand(shape, generator=g) >= ignore).to(dtype)
    return x.requires_grad_(), t, label_weight


def ghmc_reference(x, t, label_weight, bins, momentum=0.0, acc_sum=None):
    """GHM-C as mmdetection's GHMC defines it (Li et al. 2019, arXiv:1811.05181), one bin at a
    time in float64: returns sum(w * BCE) / tot; updates the list `acc_sum` when momentum > 0."""
    edges = [i / bins for i in range(bins + 1)]
    edges[-1] += 1e-6
    g = (torch.sigmoid(x.detach().double()) - t.double()).abs()
    valid = label_weight > 0
    tot = max(float(valid.sum()), 1.0)
    w = torch.zeros_like(g)
    non_empty = 0
    for i in range(bins):
        in_bin = (g >= edges[i]) & (g < edges[i + 1]) & valid
        count = int(in_bin.sum())
        if count == 0:
            continue
        non_empty += 1
        if momentum > 0:
            acc_sum[i] = momentum * acc_sum[i] + (1 - momentum) * count
            w[in_bin] = tot / acc_sum[i]
        else:
            w[in_bin] = tot / count
    if non_empty > 0:
        w = w / non_empty
    bce = F.binary_cross_entropy_with_logits(x, t.to(x.dtype), reduction="none")
    return (w * bce).sum() / tot


def value_and_grad(fn, x, *args, **kwargs):
    loss = fn(x, *args, **kwargs)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss, grad


@pytest.mark.parametrize("bins", [1, 3, 10, 30])
def test_momentum0_matches_reference(bins):
    x, t, lw = make_batch(seed=bins)
    num_valid = int((lw > 0).sum())
    assert 0 < num_valid < lw.numel()  # some ignored elements
    none, g_ours = value_and_grad(ghmc_loss, x, t, lw, bins=bins)
    ref, g_ref = value_and_grad(ghmc_reference, x, t, lw, bins)
    torch.testing.assert_close(none.sum() / num_valid, ref, rtol=1e-12, atol=0)
    # the weight is a constant: the gradient is that of the reference, whose w is a constant too
    torch.testing.assert_close(g_ours * 1 / num_valid, g_ref, rtol=1e-12, atol=1e-15)
    assert (none[lw == 0] == 0).all()  # ignored elements: exactly 0
    mean = ghmc_loss(x, t, lw, bins=bins, reduction="mean")
    torch.testing.assert_close(mean, ref, rtol=1e-12, atol=0)  # "mean" is mmdet's loss
    torch.testing.assert_close(ghmc_loss(x, t, lw, bins=bins, reduction="sum"), none.sum())


@pytest.mark.parametrize("state_dtype", [torch.float64, torch.float32])
def test_momentum_state_over_three_batches(state_dtype):
    bins, momentum = 30, 0.75
    state = ghmc_init_state(bins, dtype=state_dtype)
    assert state.shape == (bins,) and (state == 0).all()
    acc_ref = [0.0] * bins
    for step in range(3):
        x, t, lw = make_batch((40, 5), seed=100 + step, scale=2.0 + step)
        num_valid = int((lw > 0).sum())
        none, g_ours = value_and_grad(
            ghmc_loss, x, t, lw, bins=bins, momentum=momentum, acc_sum=state
        )
        ref, g_ref = value_and_grad(ghmc_reference, x, t, lw, bins, momentum, acc_ref)
        rtol = 1e-12 if state_dtype == torch.float64 else 1e-6
        torch.testing.assert_close(none.sum() / num_valid, ref, rtol=rtol, atol=0)
        torch.testing.assert_close(g_ours / num_valid, g_ref, rtol=rtol, atol=1e-15)
        torch.testing.assert_close(
            state, torch.tensor(acc_ref, dtype=state_dtype), rtol=rtol, atol=0
        )
    assert sum(a > 0 for a in acc_ref) > 5  # the batches reached many bins


def test_hand_computed():
    # bins = 2, t = [1, 0, 1], x = [0, 0, 3]: g = [0.5, 0.5, 0.047] -> bins [1, 1, 0]
    # num = [1, 2], tot = 3, n = 2: w = [3 / 2 / 2, 3 / 2 / 2, 3 / 1 / 2] = [0.75, 0.75, 1.5]
    x = torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64)
    t = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    expected = torch.tensor(
        [0.75 * math.log(2), 0.75 * math.log(2), 1.5 * math.log1p(math.exp(-3))]
    )
    torch.testing.assert_close(ghmc_loss(x, t, bins=2), expected.double())


def test_bins1_is_bce_over_valid_elements():
    x, t, lw = make_batch(seed=7)
    bce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    torch.testing.assert_close(ghmc_loss(x, t, lw, bins=1), bce * lw)  # w = tot / (tot * 1) = 1
    state = ghmc_init_state(1, dtype=torch.float64)
    with_momentum = ghmc_loss(x, t, lw, bins=1, momentum=0.5, acc_sum=state)
    torch.testing.assert_close(with_momentum, bce * lw / 0.5)  # acc = 0.5 tot on the first batch
    torch.testing.assert_close(state, (0.5 * lw.sum()).reshape(1))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("momentum", [0.0, 0.75])
def test_all_invalid_gives_zero(reduction, momentum):
    x, t, _ = make_batch(seed=8)
    state = ghmc_init_state(30, dtype=torch.float64)
    loss = ghmc_loss(
        x, t, torch.zeros_like(t), momentum=momentum, acc_sum=state, reduction=reduction
    )
    (grad,) = torch.autograd.grad(loss.sum(), x)
    assert (loss == 0).all() and (grad == 0).all()
    assert (state == 0).all()  # no bin was counted


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_input(reduction):
    x = torch.zeros(0, 5, requires_grad=True)
    loss = ghmc_loss(x, torch.zeros(0, 5), reduction=reduction)
    assert loss.shape == ((0, 5) if reduction == "none" else ()) and loss.sum().item() == 0.0
    loss.sum().backward()


def test_label_weight_broadcast_and_default():
    x, t, _ = make_batch(seed=9)
    per_anchor = (torch.arange(12) % 4 != 0).double()[:, None]  # [N, 1]
    torch.testing.assert_close(
        ghmc_loss(x, t, per_anchor), ghmc_loss(x, t, per_anchor.expand_as(t).clone())
    )
    torch.testing.assert_close(ghmc_loss(x, t), ghmc_loss(x, t, torch.ones_like(t)))
    # only the sign of label_weight matters, as in mmdet
    torch.testing.assert_close(ghmc_loss(x, t, per_anchor * 0.3), ghmc_loss(x, t, per_anchor))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("momentum", [0.0, 0.75])
def test_gradcheck(momentum, reduction):
    x, t, lw = make_batch((4, 5), seed=10, scale=2.0)
    state = ghmc_init_state(10, dtype=torch.float64)
    state += torch.arange(10, dtype=torch.float64)  # a state carried from earlier batches

    def fn(z):  # a fresh copy of the state per call: gradcheck evaluates many times
        return ghmc_loss(
            z, t, lw, bins=10, momentum=momentum, acc_sum=state.clone(), reduction=reduction
        )

    assert torch.autograd.gradcheck(fn, x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_finite_at_large_logits_and_half_precision(dtype):
    big = torch.tensor([100.0, -100.0, 1e4, -1e4, 300.0, -300.0])
    x = big.repeat(2).to(dtype).requires_grad_()  # [12]
    t = torch.tensor([1.0, 0.0]).repeat_interleave(6).to(dtype)
    state = ghmc_init_state(30)
    loss, grad = value_and_grad(ghmc_loss, x, t, momentum=0.75, acc_sum=state)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    # g is 0 or 1 here: the first and the last bin; 1 - 1e-6 rounds to 1 in float32
    assert state[0] == 0.25 * 6 and state[-1] == 0.25 * 6 and state[1:-1].sum() == 0
    x32 = x.detach().float().requires_grad_()
    loss32, grad32 = value_and_grad(
        ghmc_loss, x32, t.float(), momentum=0.75, acc_sum=ghmc_init_state(30)
    )
    torch.testing.assert_close(loss, loss32)  # the same float32 math on the same values
    torch.testing.assert_close(grad, grad32.to(dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_matches_reference(dtype):
    x, t, lw = make_batch((30, 5), seed=11, dtype=dtype)
    num_valid = int((lw > 0).sum())
    ours = ghmc_loss(x, t, lw, bins=30, reduction="sum") / num_valid
    ref = ghmc_reference(x.detach().double(), t.double(), lw, 30)  # on the same rounded logits
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"bins": 0}, r"bins must be an int >= 1, got 0"),
        ({"bins": -3}, r"bins must be an int >= 1, got -3"),
        ({"bins": 2.5}, r"bins must be an int >= 1, got 2\.5"),
        ({"bins": True}, r"bins must be an int >= 1, got True"),
        ({"momentum": 1.0}, r"momentum must lie in \[0, 1\), got 1\.0"),
        ({"momentum": -0.1}, r"momentum must lie in \[0, 1\), got -0\.1"),
        ({"momentum": float("nan")}, r"momentum must lie in \[0, 1\), got nan"),
        ({"momentum": 0.75}, r"momentum > 0 needs the running counts.*ghmc_init_state"),
        ({"momentum": 0.75, "acc_sum": torch.zeros(5)}, r"acc_sum must be a float tensor \[bins\]"),
        ({"reduction": "avg"}, r"reduction.*\['none', 'sum', 'mean'\].*'avg'"),
        ({"label_weight": torch.ones(3)}, r"label_weight \(3,\) does not broadcast"),
    ],
)
def test_errors(kwargs, match):
    x, t, _ = make_batch((4, 5))
    with pytest.raises(ValueError, match=match):
        ghmc_loss(x, t, **kwargs)


def test_other_errors():
    x, t, _ = make_batch((4, 5))
    with pytest.raises(ValueError, match="targets must have the shape of logits"):
        ghmc_loss(x, t[:, :2])
    with pytest.raises(ValueError, match="logits must be a floating-point tensor"):
        ghmc_loss(x.detach().long(), t)
    with pytest.raises(ValueError, match=r"bins must be an int >= 1, got 0"):
        ghmc_init_state(0)

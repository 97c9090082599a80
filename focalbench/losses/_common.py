"""Shared plumbing of the losses: argument checks, reductions, and the chunked elementwise driver.

Why a driver: an eager sigmoid focal loss is memory-bound on CPU. Each of its ~15 elementwise ops
reads and writes a full [N, C] temporary (38 MB at [120000, 80] float32), so it runs ~4-5x slower
than BCE there. The sigmoid-family losses (focal, QFL, VFL) therefore give a *kernel* that computes
the loss and its closed-form gradient for one flat chunk in a few preallocated work buffers. On CPU
the driver walks the input in chunks small enough for those buffers to stay in cache, so the only
full-size memory traffic is reading logits/targets and writing the loss (reduction="none") and the
gradient. On other devices one chunk covers the whole tensor (kernel launches, not cache, dominate).

Caveat: the chunk loop runs ~25 small parallel ops per chunk. On an oversubscribed CPU (more busy
threads than cores), libgomp's spin-waiting makes each of them wait for a descheduled thread:
measured 2-17x BCE instead of 0.75x with load 4 on 2 cores, back to ~1x with
OMP_WAIT_POLICY=PASSIVE or one intra-op thread. Give each job its own cores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

REDUCTIONS = ("none", "sum", "mean")

# Elements per CPU chunk: 8 float32 rows of 1 MiB stay in L3. Fwd+bwd of the focal loss at
# [120000, 80] on the 2-core dev box (AMD EPYC, 2 MiB L2, 32 MiB L3), as a multiple of BCE:
# 2**15 ~1.35x (per-chunk Python overhead), 2**16 ~0.95x, 2**18 ~0.75x, 2**20 ~1.0x (out of cache).
CPU_CHUNK = 1 << 18

# A kernel fills `loss` (and `grad` when it is not None) for one flat chunk of logits `x` and
# targets `t`, using the scratch rows `work`; all tensors are 1-D, same length, compute dtype.
Kernel = Callable[[Tensor, Tensor, Tensor, "Tensor | None", list[Tensor]], None]
NUM_WORK = 5


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")


def check_unit_interval(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:  # written this way so that NaN is rejected too
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")


def check_non_negative(name: str, value: float) -> None:
    if not value >= 0.0:  # NaN fails as well
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_float_logits(fn: str, logits: Tensor) -> None:
    if not logits.is_floating_point():
        raise ValueError(f"{fn}: logits must be a floating-point tensor, got {logits.dtype}")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64 (gradcheck); float32/float16/bfloat16 are computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def reduce(loss: Tensor, reduction: str, count: Tensor | int | None = None) -> Tensor:
    """Reduce an elementwise loss. "mean" divides by `count` (default: numel); an empty mean is 0.

    0 rather than torch's NaN: an image batch without any valid element contributes no loss, and a
    NaN would poison the whole step.
    """
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    if count is None:
        count = loss.numel()
    if isinstance(count, Tensor):
        return total / count.clamp_min(1).to(total.dtype)
    return total / max(count, 1)


def _run(
    kernel: Kernel,
    logits: Tensor,
    targets: Tensor,
    reduction: str,
    want_grad: bool,
    align: int = 1,
) -> tuple[Tensor, Tensor | None]:
    """Apply `kernel` chunk by chunk. Returns (loss, d sum(loss) / d logits or None).

    align: every chunk starts at a multiple of it and its length is a multiple of it (so is n:
    the caller's guarantee). A per-class kernel passes C, the size of the last dimension, so that
    a chunk viewed as [-1, C] has the classes in its columns."""
    cdtype = compute_dtype(logits.dtype)
    x = logits.detach().reshape(-1)  # [n], row-major, a view when logits is contiguous
    t = targets.detach().reshape(-1)  # [n]
    n = x.numel()
    device = x.device
    chunk = min(n, CPU_CHUNK if device.type == "cpu" else n)
    chunk = max(1, align, chunk // align * align)

    def row() -> Tensor:
        return torch.empty(chunk, dtype=cdtype, device=device)

    work = [row() for _ in range(NUM_WORK)]
    # compute-dtype copies of half-precision inputs / int targets, and a loss row for sum/mean
    x_row = row() if x.dtype != cdtype else None
    t_row = row() if t.dtype != cdtype else None
    loss = torch.empty(n, dtype=cdtype, device=device) if reduction == "none" else None
    loss_row = row() if loss is None else None
    grad = torch.empty(n, dtype=cdtype, device=device) if want_grad else None
    partial_sums: list[Tensor] = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        size = stop - start
        xs = x[start:stop] if x_row is None else x_row[:size].copy_(x[start:stop])
        ts = t[start:stop] if t_row is None else t_row[:size].copy_(t[start:stop])
        ls = loss[start:stop] if loss_row is None else loss_row[:size]
        gs = None if grad is None else grad[start:stop]
        kernel(xs, ts, ls, gs, [w[:size] for w in work])
        if loss_row is not None:
            partial_sums.append(ls.sum())
    if loss is not None:
        out = loss.view(logits.shape)
    elif partial_sums:
        out = torch.stack(partial_sums).sum()
        if reduction == "mean":
            out = out / n
    else:  # empty input: sum and mean are 0 (see `reduce`)
        out = torch.zeros((), dtype=cdtype, device=device)
    return out, None if grad is None else grad.view(logits.shape)


class _ElementwiseLoss(torch.autograd.Function):
    """Autograd wrapper: the gradient is computed in the forward pass and saved (one [N, C] tensor
    in the compute dtype); backward only scales it. Targets are constants (they get no gradient)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, logits: Tensor, targets: Tensor, kernel: Kernel, reduction: str, align: int
    ) -> Tensor:
        loss, grad = _run(kernel, logits, targets, reduction, want_grad=True, align=align)
        assert grad is not None, "want_grad=True must produce a gradient"
        ctx.save_for_backward(grad)
        ctx.scale = 1.0 / max(grad.numel(), 1) if reduction == "mean" else 1.0
        ctx.logits_dtype = logits.dtype
        return loss

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: Any, grad_loss: Tensor
    ) -> tuple[Tensor, None, None, None, None]:
        (grad,) = ctx.saved_tensors
        if ctx.scale != 1.0:
            grad_loss = grad_loss * ctx.scale  # a scalar for "mean": cheap
        # out-of-place: the saved gradient must survive a second backward (retain_graph=True)
        grad_logits = (grad * grad_loss).to(ctx.logits_dtype)
        return grad_logits, None, None, None, None


def elementwise_loss(
    kernel: Kernel, logits: Tensor, targets: Tensor, reduction: str, align: int = 1
) -> Tensor:
    """Run `kernel` over same-shaped logits/targets, through autograd when logits need a grad.
    align: see `_run` (C for a kernel that reads the class of each element)."""
    if torch.is_grad_enabled() and logits.requires_grad:
        out: Tensor = _ElementwiseLoss.apply(logits, targets, kernel, reduction, align)
        return out
    return _run(kernel, logits, targets, reduction, want_grad=False, align=align)[0]


def bce_into(x: Tensor, t: Tensor, p: Tensor, q: Tensor, out: Tensor, tmp: Tensor) -> Tensor:
    """out = BCE(x, t) = softplus(x) - x t from p = sigmoid(x), q = sigmoid(-x); `tmp` is scratch.

    Written as (relu(x) - x t) + softplus(-|x|): both parts are >= 0 for t in [0, 1], so nothing
    cancels. softplus(x) - x t would round to 0 at (x, t) = (17, 1) in float32, where the loss is
    4e-8. softplus(-|x|) = -log(1 - min(p, q)) reuses the sigmoids instead of another exp.
    """
    torch.minimum(p, q, out=tmp)
    tmp.neg_().log1p_()  # log(sigmoid(|x|)) = -softplus(-|x|)
    torch.clamp(x, min=0.0, out=out)
    out.addcmul_(x, t, value=-1.0)
    return out.sub_(tmp)

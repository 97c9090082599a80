"""GHM-C: BCE re-weighted by the inverse density of the gradient norm (gradient harmonizing).

Gradient Harmonized Single-stage Detector, Li, Liu, Wang, AAAI 2019, arXiv:1811.05181, eq. (8):
    L_GHM-C = 1/N sum_i BCE(x_i, t_i) / GD(g_i),   g = |sigmoid(x) - t|
with the gradient density GD approximated by counting g in `bins` equal unit regions (sec. 3.3).
Same semantics as mmdetection's GHMC (mmdet/models/losses/ghm_loss.py); written here, not copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from focalbench.losses._common import check_float_logits, check_reduction, compute_dtype, reduce


def check_ghmc_args(bins: int, momentum: float) -> None:
    """bins: an int >= 1; momentum: a float in [0, 1). ValueError naming the argument otherwise."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be an int >= 1, got {bins!r}")
    if not 0.0 <= momentum < 1.0:  # NaN fails as well
        raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")


def ghmc_init_state(
    bins: int = 30, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The running per-bin counts of GHM-C with momentum > 0: zeros [bins].

    Pass it as `ghmc_loss(..., acc_sum=state)`, which updates it in place. A criterion module keeps
    it as a buffer (`self.register_buffer("ghmc_acc_sum", ghmc_init_state(bins))`), so it moves
    with `.to(device)` and is saved in the checkpoint, as mmdet's GHMC.acc_sum is.
    """
    check_ghmc_args(bins, 0.0)
    return torch.zeros(bins, dtype=dtype, device=device)


def ghmc_loss(
    logits: Tensor,
    targets: Tensor,
    label_weight: Tensor | None = None,
    *,
    bins: int = 30,
    momentum: float = 0.0,
    acc_sum: Tensor | None = None,
    reduction: str = "none",
) -> Tensor:
    """GHM-C loss, elementwise: w * BCE(logits, targets), w the harmonizing weight (no gradient).

    Gradient Harmonized Single-stage Detector (Li et al., 2019), arXiv:1811.05181. With
    g = |sigmoid(x) - t| (detached) and the valid elements V = {label_weight > 0}:
        bin(g) = i such that i/bins <= g < (i+1)/bins (the last edge is 1 + 1e-6, so g = 1 is in
            the last bin), counted over V only: num[i]; tot = max(|V|, 1)
        d[i] = num[i]                                          (momentum = 0)
             = acc_sum[i] <- momentum acc_sum[i] + (1 - momentum) num[i]   (num[i] > 0 only)
        w = tot / (d[bin(g)] * n) on V, 0 elsewhere; n = number of non-empty bins this batch
    This is mmdetection's GHMC: its loss is sum(w * BCE) / tot, i.e. `reduction="mean"` here.

    Args:
        logits: [N, C] (any shape) raw scores, float16/bfloat16/float32/float64.
        targets: same shape, binary class targets in {0, 1} (one-hot; soft targets in [0, 1] are
            accepted: g is then |p - t| as well).
        label_weight: None (every element valid) or a tensor broadcastable to logits' shape
            ([N, C], or [N, 1] per anchor): elements with label_weight > 0 are valid, the rest
            (ignored anchors) get weight 0 and are not counted in any bin. As in mmdet only the
            sign matters: the value does not scale the loss.
        bins: number of unit regions of g, an int >= 1 (paper and mmdet config: 30).
        momentum: in [0, 1). 0: densities from this batch alone. > 0: exponential moving
            average of the bin counts over batches (mmdet config: 0.75), kept in `acc_sum`.
        acc_sum: the running counts, a float tensor [bins] on logits' device, from
            `ghmc_init_state(bins)`; required when momentum > 0 and updated IN PLACE (only the bins
            that are non-empty in this batch). Not read or written when momentum == 0.
        reduction: "none" -> w * BCE, same shape as logits (0 at invalid elements); "sum";
            "mean" = sum / max(number of valid elements, 1), which is mmdetection's GHMC loss
            (not the mean over all elements). All elements invalid: 0, not NaN.

    Returns: float32 (float64 for float64 logits); half-precision logits are computed in float32
    and their gradient is returned in their own dtype. The gradient is that of BCE times the
    constant w; targets and label_weight get none. BCE and g are finite at any logit.

    Vectorized: one bucketize and one scatter-add instead of mmdet's loop over bins, with the same
    edge comparisons (edges i / bins in the compute dtype), and no host sync.
    """
    check_reduction(reduction)
    check_float_logits("ghmc_loss", logits)
    check_ghmc_args(bins, momentum)
    if targets.shape != logits.shape:
        raise ValueError(
            f"ghmc_loss: targets must have the shape of logits {tuple(logits.shape)}, "
            f"got {tuple(targets.shape)}"
        )
    if momentum > 0:
        _check_state(acc_sum, bins, logits.device)
    cdtype = compute_dtype(logits.dtype)
    x = logits.to(cdtype)
    t = targets.detach().to(cdtype)
    if label_weight is None:
        valid = torch.ones(x.shape, dtype=torch.bool, device=x.device)
    else:
        try:
            valid = torch.broadcast_to(label_weight.detach() > 0, x.shape)
        except RuntimeError as err:
            raise ValueError(
                f"ghmc_loss: label_weight {tuple(label_weight.shape)} does not broadcast to "
                f"logits {tuple(x.shape)}"
            ) from err
    with torch.no_grad():
        weight, num_valid = _harmonizing_weight(x, t, valid, bins, momentum, acc_sum)
    loss = F.binary_cross_entropy_with_logits(x, t, reduction="none") * weight
    return reduce(loss, reduction, count=num_valid)


def _check_state(acc_sum: Tensor | None, bins: int, device: torch.device) -> None:
    if acc_sum is None:
        raise ValueError(
            "ghmc_loss: momentum > 0 needs the running counts: pass acc_sum=ghmc_init_state(bins) "
            "and keep it between batches"
        )
    if acc_sum.shape != (bins,) or not acc_sum.is_floating_point():
        raise ValueError(
            f"ghmc_loss: acc_sum must be a float tensor [bins] = [{bins}], got "
            f"{tuple(acc_sum.shape)} {acc_sum.dtype}"
        )
    if acc_sum.device != device:
        raise ValueError(f"ghmc_loss: acc_sum is on {acc_sum.device}, logits on {device}")


def _harmonizing_weight(
    x: Tensor, t: Tensor, valid: Tensor, bins: int, momentum: float, acc_sum: Tensor | None
) -> tuple[Tensor, Tensor]:
    """w [x.shape] (0 at invalid elements) and the number of valid elements; updates acc_sum."""
    g = (torch.sigmoid(x) - t).abs_()  # gradient norm of BCE w.r.t. x, in [0, 1]
    edges = torch.arange(bins + 1, dtype=x.dtype, device=x.device) / bins  # [bins + 1]
    edges[-1] += 1e-6  # g = 1 (x = -inf at t = 1, rounded) falls in the last bin
    # right=True gives i with edges[i - 1] <= g < edges[i]; minus 1 is mmdet's bin
    idx = torch.bucketize(g, edges, right=True) - 1  # [x.shape]
    valid = valid & (idx >= 0) & (idx < bins)  # a NaN logit lands outside: not counted
    idx = idx.clamp_(0, bins - 1)
    # int64 counts: exact beyond float32's 2**24, and scatter_add needs no host sync (bincount does)
    num = torch.zeros(bins, dtype=torch.int64, device=x.device)
    num.scatter_add_(0, idx.reshape(-1), valid.reshape(-1).long())  # [bins]
    num_valid = num.sum()
    nonempty = num > 0  # [bins]
    if momentum > 0:
        assert acc_sum is not None, "_check_state lets momentum > 0 through only with acc_sum"
        moved = momentum * acc_sum + (1.0 - momentum) * num.to(acc_sum.dtype)
        acc_sum.copy_(torch.where(nonempty, moved, acc_sum))  # empty bins keep their count
        density = acc_sum.double()
    else:
        density = num.double()
    # the [bins] weights in float64 (mmdet divides Python floats); empty bins get 0, not tot / 0:
    # no valid element reads them
    tot = num_valid.clamp_min(1).double()
    n = nonempty.sum().clamp_min(1).double()
    per_bin = torch.where(nonempty, tot / (density.clamp_min(1e-12) * n), 0.0).to(x.dtype)
    weight = torch.where(valid, per_bin[idx], 0.0)
    return weight, num_valid

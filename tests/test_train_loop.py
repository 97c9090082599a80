"""The fit loop's pieces: the LR schedule, the AMP dtype choice and fp16 loss scaling's skipped
steps."""

import math

import pytest
import torch

from focalbench.engine.train import _optimizer_stepped, amp_dtype, warmup_cosine


def test_warmup_then_cosine():
    f = warmup_cosine(total_iters=110, warmup_iters=10)
    assert f(0) == pytest.approx(0.001)
    assert f(5) == pytest.approx(0.001 + 0.999 * 0.5)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(110) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("device", "enabled", "bf16", "expected"),
    [
        ("cuda", True, True, torch.bfloat16),
        ("cuda", True, False, torch.float16),  # older GPUs: fp16, with a GradScaler
        ("cuda", False, True, None),
        ("cpu", True, True, None),  # no autocast on the CPU
    ],
)
def test_amp_dtype(monkeypatch, device, enabled, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert amp_dtype(torch.device(device), enabled) is expected


@pytest.mark.parametrize("grad", [1.0, float("inf")])
def test_the_schedule_follows_only_the_steps_loss_scaling_takes(grad):
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    loss = (param * grad).sum()  # d loss / d param = grad
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    stepped = _optimizer_stepped(scaler)
    assert stepped == math.isfinite(grad)
    assert scaler.get_scale() == (1024.0 if stepped else 512.0)
    assert torch.count_nonzero(param).item() == (3 if stepped else 0)


def test_without_loss_scaling_every_step_counts():
    assert _optimizer_stepped(torch.amp.GradScaler("cpu", enabled=False))

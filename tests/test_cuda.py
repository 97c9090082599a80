"""The CUDA paths: AMP (bf16 where the GPU has it, fp16 with a GradScaler otherwise), channels_last,
torch.compile with inductor, and the GPU pool. Skipped on machines without a CUDA GPU (CI has none);
run them on one with `pytest tests/test_cuda.py`."""

import copy
import csv

import pytest
import torch

from focalbench.config import compose
from focalbench.engine.run import run
from focalbench.models import compile_model
from tests.conftest import TINY
from tests.models import test_retinanet

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _run(tmp_path, *overrides):
    cfg = compose([*TINY, f"results_dir={tmp_path}", "train.progress=false", *overrides])
    result = run(cfg)
    assert result.status == "ok", result.error
    return result


def _checkpoint(result):
    return torch.load(result.run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)


def test_cuda_run_trains_in_bf16_without_a_scaler(tmp_path):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16; test_fp16_run_uses_a_grad_scaler covers it")
    result = _run(tmp_path, "train.device=cuda")
    assert 0.0 <= result.metrics["mAP"] <= 1.0 and result.metrics["imgs_per_s"] > 0
    assert _checkpoint(result)["scaler"] == {}  # bf16 needs no loss scaling


def test_fp16_run_uses_a_grad_scaler(tmp_path, monkeypatch, recwarn):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # an older GPU
    result = _run(tmp_path, "train.device=cuda")
    assert _checkpoint(result)["scaler"]["scale"] > 0
    # steps the scaler skips (inf gradients at the first, too-large scales) do not advance the LR
    # schedule, so torch does not warn that the scheduler ran ahead of the optimizer
    assert not [w for w in recwarn if "lr_scheduler.step()" in str(w.message)]


def test_inductor_compiled_retinanet_matches_eager_on_cuda(monkeypatch):
    # full float32 (no TF32): in bf16 the two differ by rounding alone, yet that rounding grows
    # through BatchNorm's backward (a difference of near-equal terms) to tens of percent in the
    # first layer's gradient, which would hide a real error
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    eager = test_retinanet._model("focal").cuda().to(memory_format=torch.channels_last).train()
    compiled = compile_model(copy.deepcopy(eager), backend="inductor")
    images, targets = test_retinanet._batch()
    images = [im.cuda() for im in images]
    targets = [{k: v.cuda() for k, v in t.items()} for t in targets]
    eager_losses, compiled_losses = eager(images, targets), compiled(images, targets)
    torch.testing.assert_close(compiled_losses, eager_losses, rtol=1e-4, atol=1e-6)
    sum(eager_losses.values()).backward()
    sum(compiled_losses.values()).backward()
    errors = {
        name: ((q.grad - p.grad).norm() / p.grad.norm().clamp_min(1e-12)).item()
        for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True)
        if p.grad is not None
    }
    worst = sorted(errors.items(), key=lambda kv: -kv[1])[:5]
    assert worst[0][1] < 1e-3, worst


def test_compiled_cuda_run(tmp_path):
    result = _run(tmp_path, "train.device=cuda", "train.compile=true")
    assert 0.0 <= result.metrics["mAP"] <= 1.0


def test_gpu_pool_sweep(cli, tmp_path):
    done = cli("sweep", *TINY, "loss=bce,focal", "--gpus", "0", "--jobs-per-gpu", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    with open(tmp_path / "results" / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["loss"] for r in rows) == ["bce", "focal"]
    assert {(r["status"], r["device"]) for r in rows} == {("ok", "cuda")}

"""`train.compile`: a compiled detector computes what the eager one computes.

Graph capture is checked on the CPU with the aot_eager backend, which traces forward and backward as
inductor does but runs the traced graphs instead of generating kernels (seconds instead of the
minute and a half inductor takes for a RetinaNet on two cores). The inductor backend itself is
checked on a GPU in tests/test_cuda.py.
"""

import copy

import pytest
import torch

from focalbench.config import compose
from focalbench.engine.run import run
from focalbench.models import compile_model
from tests.conftest import TINY
from tests.models import test_detr, test_retinanet

DETECTORS = {
    "retinanet": (lambda: test_retinanet._model("focal"), test_retinanet._batch),
    "detr": (lambda: test_detr.tiny_detr("focal", "focal"), test_detr.batch),
}


def _losses_and_grads(model, images, targets):
    losses = model(images, targets)
    sum(losses.values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_compiled_detector_matches_eager(name):
    build, batch = DETECTORS[name]
    eager = build().train()
    compiled = compile_model(copy.deepcopy(eager), backend="aot_eager")
    images, targets = batch()

    losses, grads = _losses_and_grads(eager, images, targets)
    c_losses, c_grads = _losses_and_grads(compiled, images, targets)
    torch.testing.assert_close(c_losses, losses, rtol=1e-5, atol=1e-6)
    assert c_grads.keys() == grads.keys()
    torch.testing.assert_close(c_grads, grads, rtol=1e-4, atol=1e-6)

    # checkpoints move freely between compiled and eager runs
    assert list(compiled.state_dict()) == list(eager.state_dict())
    for part in compiled.compiled_parts:  # and the parts really went through torch.compile
        assert compiled.get_submodule(part)._compiled_call_impl is not None

    eager.eval(), compiled.eval()
    with torch.no_grad():
        out, c_out = eager(images), compiled(images)
    for d, c_d in zip(out, c_out, strict=True):
        torch.testing.assert_close(c_d, d, rtol=1e-4, atol=1e-5)


def test_compiled_run_is_ok_and_keeps_the_run_id(tmp_path):
    overrides = [*TINY, f"results_dir={tmp_path}", "train.progress=false"]
    compiled = compose([*overrides, "train.compile=true", "train.compile_backend=aot_eager"])
    assert compiled.run_id == compose(overrides).run_id  # an execution setting, as train.device
    result = run(compiled)
    assert result.status == "ok", result.error
    assert 0.0 <= result.metrics["mAP"] <= 1.0

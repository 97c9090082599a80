"""The small DETR: losses, inference format, matching audit, config wiring (issue 6)."""

import dataclasses
import math

import pytest
import torch

from focalbench.config import DetrCfg, LossCfg, MatcherCfg, compose
from focalbench.errors import InputError
from focalbench.models import build_model
from focalbench.models.detr import ResNetBody, SinePositionEncoding, cost_alpha_gamma

C, S = 3, 64
TINY = DetrCfg(d_model=32, nheads=4, enc_layers=1, dec_layers=2, dim_feedforward=64,
                num_queries=10)  # fmt: skip


def tiny_detr(loss="focal", matcher="focal", **model):
    torch.manual_seed(0)
    defaults = {"focal": (0.25, 2.0), "vfl": (0.75, 2.0), "ce": (None, 0.0), "qfl": (None, 0.0)}
    alpha, gamma = defaults.get(loss, (None, 2.0))
    loss_cfg = LossCfg(name=loss, alpha=alpha, gamma=gamma)
    return build_model(dataclasses.replace(TINY, **model), loss_cfg, MatcherCfg(name=matcher), C, S)


def batch(n=3):
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, S, S, generator=g) for _ in range(n)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 10.0, 60.0, 33.0]]),
         "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},  # no object
        {"boxes": torch.tensor([[1.0, 1.0, 63.0, 63.0]]), "labels": torch.tensor([1])},
    ]  # fmt: skip
    return images, targets[:n]


@pytest.mark.parametrize("loss", ["focal", "ce", "vfl", "qfl", "bce", "softmax_focal"])
def test_forward_backward_is_finite(loss):
    model = tiny_detr(loss).train()
    images, targets = batch()
    losses = model(images, targets)
    assert set(losses) == {"classification", "bbox_l1", "bbox_giou"}
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert model.class_embed.weight.grad.abs().sum() > 0
    assert model.backbone.net.conv1.weight.grad.abs().sum() > 0


def test_aux_loss_adds_every_decoder_layer():
    images, targets = batch()
    with_aux = tiny_detr(aux_loss=True).train()(images, targets)
    without = tiny_detr(aux_loss=False).train()(images, targets)
    assert with_aux["bbox_l1"] > without["bbox_l1"]


@pytest.mark.parametrize("loss", ["focal", "ce"])
def test_inference_format(loss):
    model = tiny_detr(loss).eval()
    images, _ = batch()
    with torch.inference_mode():
        out = model(images)
    assert len(out) == len(images)
    for det in out:
        k = min(100, 10 * C)  # top-k over queries x classes
        assert det["boxes"].shape == (k, 4) and det["scores"].shape == det["labels"].shape == (k,)
        assert (det["boxes"] >= 0).all() and (det["boxes"] <= S).all()
        assert (det["boxes"][:, 2:] >= det["boxes"][:, :2]).all()
        assert ((det["scores"] >= 0) & (det["scores"] <= 1)).all()
        assert det["labels"].min() >= 0 and det["labels"].max() < C
        assert (det["scores"][:-1] >= det["scores"][1:]).all()


def test_prior_probability_init():
    images, _ = batch()
    with torch.inference_mode():
        sig = tiny_detr("focal").eval()(images)[0]["scores"]
        soft = tiny_detr("ce").eval()(images)[0]["scores"]
    assert sig.max() < 0.1 and soft.max() < 0.1  # ~0.01 at init: no drowning in easy negatives


def test_matching_audit_keys_state_and_side_effects():
    model = tiny_detr("focal", "focal").train()
    images, targets = batch()
    bn = model.backbone.net.bn1
    running = bn.running_mean.clone()
    first = model.audit(model, images, targets)
    assert list(first) == ["match_agreement", "match_regret", "match_stability"]
    assert math.isnan(first["match_stability"])  # nothing to compare with yet
    # the focal cost with the loss's alpha/gamma IS the loss-optimal cost
    assert first["match_agreement"] == 1.0 and first["match_regret"] == 0.0
    second = model.audit(model, images, targets)
    assert second["match_stability"] == 0.0  # same weights, same images: no query changed
    assert model.training and torch.equal(bn.running_mean, running)  # eval inside, restored


@pytest.mark.parametrize("matcher", ["prob", "ce", "focal_full"])
def test_audit_of_other_costs_is_in_range(matcher):
    model = tiny_detr("focal", matcher)
    result = model.audit(model, *batch())
    assert 0.0 <= result["match_agreement"] <= 1.0 and result["match_regret"] >= 0.0


def test_cost_alpha_gamma_defaults_to_the_loss():
    assert cost_alpha_gamma(LossCfg("focal", 0.4, 1.5), MatcherCfg()) == (0.4, 1.5)
    assert cost_alpha_gamma(LossCfg("focal", 0.4, 1.5), MatcherCfg(alpha=0.1, gamma=3.0)) == (
        0.1,
        3.0,
    )
    assert cost_alpha_gamma(LossCfg("bce", None, 0.0), MatcherCfg()) == (None, 0.0)
    assert cost_alpha_gamma(LossCfg("qfl", None, 0.0, beta=2.5), MatcherCfg()) == (0.25, 2.5)
    assert cost_alpha_gamma(LossCfg("vfl", 0.75, 2.0), MatcherCfg()) == (
        0.25,
        2.0,
    )  # VFL's alpha is
    assert cost_alpha_gamma(LossCfg("ce", None, 0.0), MatcherCfg()) == (0.25, 0.0)  # not the cost's


def test_sine_position_encoding():
    pe = SinePositionEncoding(8)(3, 5, torch.device("cpu"))
    assert pe.shape == (15, 8)
    # row-major: entry h * W + w encodes y = h in the first half, x = w in the second
    y = (1 + 0.5) / 3 * 2 * math.pi
    x = (4 + 0.5) / 5 * 2 * math.pi
    torch.testing.assert_close(pe[1 * 5 + 4, 0], torch.tensor(math.sin(y)))
    torch.testing.assert_close(pe[1 * 5 + 4, 4], torch.tensor(math.sin(x)))
    torch.testing.assert_close(pe[1 * 5 + 4, 5], torch.tensor(math.cos(x)))


def test_configs_compose():
    for matcher in ("prob", "ce", "focal", "focal_full"):
        cfg = compose(["experiment=detr_smoke", f"matcher={matcher}"])
        assert cfg.model.name == "detr" and cfg.matcher.name == matcher
    demo = compose(["experiment=detr_demo"])
    assert demo.model.name == "detr" and demo.loss.name == "focal" and demo.matcher.name == "focal"


@pytest.mark.slow
def test_detr_smoke_run_records_the_audit(tmp_path):
    from focalbench.engine.run import run

    cfg = compose(["experiment=detr_smoke", "matcher=focal_full", f"results_dir={tmp_path}",
                   "data.train_images=8", "data.val_images=4", "train.progress=false"])  # fmt: skip
    result = run(cfg)
    assert result.status == "ok", result.error
    audit = result.metrics["matching_audit"]
    assert set(audit) == {"match_agreement", "match_regret", "match_stability"}
    header = (result.run_dir / "train_log.csv").read_text().splitlines()[0]
    assert header.endswith("match_agreement,match_regret,match_stability")


def test_queries_start_on_their_anchors_and_see_the_image():
    model = tiny_detr().eval()
    images, _ = batch(2)
    with torch.no_grad():
        logits, boxes = model.head_outputs(images)
    assert logits.shape == (2, 2, 10, C) and boxes.shape == (2, 2, 10, 4)  # [L, B, Q, K]
    anchors = model.anchor_logit.sigmoid()
    torch.testing.assert_close(boxes[:, :, :, :2], anchors.expand_as(boxes[:, :, :, :2]))
    # content is sampled from the memory: two images give two sets of class logits from step one
    assert not torch.allclose(logits[-1, 0], logits[-1, 1])


@pytest.mark.parametrize(("stride", "channels"), [(8, 128), (16, 256), (32, 512)])
def test_resnet_body_strides(stride, channels):
    body = ResNetBody("resnet18", stride)
    assert body.out_channels == channels
    assert body(torch.rand(1, 3, 64, 64)).shape == (1, channels, 64 // stride, 64 // stride)
    with pytest.raises(ValueError, match=r"stride must be one of \[8, 16, 32\], got 4"):
        ResNetBody("resnet18", 4)


def test_backbone_loads_a_local_torchvision_checkpoint(tmp_path):
    from torchvision.models import resnet18

    reference = resnet18(weights=None)
    path = tmp_path / "r18.pt"
    torch.save(reference.state_dict(), path)
    model = build_model(dataclasses.replace(TINY, weights=str(path)), LossCfg(), MatcherCfg(), C, S)
    torch.testing.assert_close(model.backbone.net.conv1.weight, reference.conv1.weight)


# ---- per-class alpha (loss=focal loss.alpha=[...]) -----------------------------------------------
ALPHA = (0.1, 0.5, 0.9)  # one per class, C = 3


def _focal_entry(x, target, alpha, gamma=2.0):
    """Sigmoid focal loss of logit x at target 0/1 with weight alpha (neg: 1 - alpha), float64."""
    p = torch.sigmoid(x)
    if target:
        return alpha * (1 - p) ** gamma * -torch.log(p)
    return (1 - alpha) * p**gamma * -torch.log(1 - p)


def test_per_class_alpha_flows_to_the_focal_cost_and_trains():
    assert cost_alpha_gamma(LossCfg("focal", ALPHA, 2.0), MatcherCfg()) == (ALPHA, 2.0)
    assert cost_alpha_gamma(LossCfg("focal", ALPHA, 2.0), MatcherCfg(alpha=0.3)) == (0.3, 2.0)
    model = build_model(TINY, LossCfg("focal", ALPHA), MatcherCfg(name="focal"), C, S).train()
    assert model.criterion.matcher.alpha == ALPHA
    losses = model(*batch())
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(model.class_embed.weight.grad).all()
    with pytest.raises(InputError, match="loss.alpha has 2 per-class weights; the dataset has 3"):
        build_model(TINY, LossCfg("focal", (0.5, 0.5)), MatcherCfg(), C, S)


@pytest.mark.parametrize("name", ["focal", "focal_full"])
def test_per_class_focal_costs_against_the_formula(name):
    from focalbench.matching import class_cost

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, C, generator=g, dtype=torch.float64) * 3  # [Q, C]
    labels = torch.tensor([2, 0, 2, 1])  # [T]
    cost = class_cost(name, logits, labels, alpha=list(ALPHA), gamma=2.0)
    for q in range(5):
        for t, label in enumerate(labels.tolist()):
            pos = _focal_entry(logits[q, label], 1, ALPHA[label])
            neg = _focal_entry(logits[q, label], 0, ALPHA[label])
            want = pos - neg
            if name == "focal_full":  # plus the query's negatives at every class
                want = want + sum(_focal_entry(logits[q, c], 0, ALPHA[c]) for c in range(C))
            torch.testing.assert_close(cost[q, t], want)
    # a constant list is the float
    torch.testing.assert_close(
        class_cost(name, logits, labels, alpha=[0.3] * C), class_cost(name, logits, labels, 0.3)
    )
    with pytest.raises(ValueError, match="expected length 3, got 2"):
        class_cost(name, logits, labels, alpha=[0.3, 0.3])
    with pytest.raises(ValueError, match=r"per-class alpha must lie in \[0, 1\]"):
        class_cost(name, logits, labels, alpha=[0.3, 1.3, 0.3])


def test_per_class_focal_cost_is_loss_optimal_by_brute_force():
    """Over every assignment of T ground truths to Q queries, the total sigmoid focal loss with a
    per-class alpha (torchvision's, class by class) minus the assignment's summed focal cost is one
    constant: minimizing the cost minimizes the loss."""
    from itertools import permutations

    from torchvision.ops import sigmoid_focal_loss as tv_focal

    from focalbench.matching import class_cost

    g = torch.Generator().manual_seed(4)
    logits = torch.randn(4, C, generator=g, dtype=torch.float64) * 2  # [Q, C]
    labels = torch.tensor([1, 2, 1])
    cost = class_cost("focal", logits, labels, alpha=ALPHA, gamma=2.0)
    gaps = []
    for queries in permutations(range(4), len(labels)):
        target = torch.zeros_like(logits)
        target[list(queries), labels] = 1.0
        total = sum(tv_focal(logits[:, c], target[:, c], ALPHA[c], 2.0).sum() for c in range(C))
        gaps.append(float(total - cost[list(queries), range(len(labels))].sum()))
    assert max(gaps) - min(gaps) < 1e-12


def test_per_class_alpha_audit_finds_the_focal_cost_optimal():
    model = build_model(TINY, LossCfg("focal", ALPHA), MatcherCfg(name="focal"), C, S).train()
    result = model.audit(model, *batch())
    assert result["match_agreement"] == 1.0 and result["match_regret"] == pytest.approx(0.0)
    prob = build_model(TINY, LossCfg("focal", ALPHA), MatcherCfg(name="prob"), C, S)
    other = prob.audit(prob, *batch())
    assert 0.0 <= other["match_agreement"] <= 1.0 and other["match_regret"] >= 0.0

"""FocalRetinaNet: the vectorized loss head equals torchvision's stock loss where their semantics
meet, every registered loss trains, and inference returns top-100 detections with scores in
[0, 1]."""

import pytest
import torch
from torchvision.models.detection.retinanet import RetinaNet

from focalbench.config import LossCfg, RetinaNetCfg
from focalbench.losses import LOSSES
from focalbench.models.retinanet import build_retinanet

SIZE = 64
NUM_CLASSES = 3


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, SIZE, SIZE, generator=g) for _ in range(2)]
    targets = [
        {
            "boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [30.0, 30.0, 60.0, 50.0]]),
            "labels": torch.tensor([0, 2]),
        },
        {"boxes": torch.tensor([[10.0, 10.0, 20.0, 24.0]]), "labels": torch.tensor([1])},
    ]
    return images, targets


def _model(loss="focal", normalization="num_pos_per_image", **model_kw):
    torch.manual_seed(0)
    defaults = LOSSES[loss].params
    loss_cfg = LossCfg(
        name=loss,
        alpha=defaults.get("alpha"),
        gamma=defaults.get("gamma", 2.0),
        beta=defaults.get("beta", 2.0),
        normalization=normalization,
    )
    model_cfg = RetinaNetCfg(fpn_channels=64, head_convs=1, **model_kw)
    return build_retinanet(model_cfg, loss_cfg, NUM_CLASSES, SIZE)


def test_matches_torchvision_stock_loss():
    """focal, alpha 0.25, gamma 2, per-image normalization: torchvision's own head loss, computed by
    its loop."""
    model = _model("focal", "num_pos_per_image").train()
    images, targets = _batch()
    ours = model(images, targets)
    model.compute_loss = lambda t, h, a: RetinaNet.compute_loss(model, t, h, a)  # the stock head
    stock = model(images, targets)
    for key in ("classification", "bbox_regression"):
        torch.testing.assert_close(ours[key], stock[key], rtol=1e-5, atol=1e-6)


def test_batch_normalization_divides_by_all_positives():
    """num_pos_batch = sum over images / total positives; per image = mean of per-image ratios."""
    images, targets = _batch()
    per_image = _model("bce", "num_pos_per_image").train()
    batch = _model("bce", "num_pos_batch").train()
    batch.load_state_dict(per_image.state_dict())
    torch.manual_seed(1)
    a = per_image(images, targets)["classification"]
    torch.manual_seed(1)
    b = batch(images, targets)["classification"]
    assert not torch.allclose(a, b)  # two images with different positive counts: the rules differ


@pytest.mark.parametrize("loss", ["focal", "bce", "softmax_focal", "ce", "qfl", "vfl"])
@pytest.mark.parametrize("box_head", ["l1", "dfl"])
def test_every_loss_trains(loss, box_head):
    model = _model(loss, "num_pos_batch", box_head=box_head).train()
    images, targets = _batch()
    losses = model(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    cls_grad = model.head.classification_head.cls_logits.weight.grad
    box_grad = model.head.regression_head.bbox_reg.weight.grad
    assert cls_grad is not None and torch.isfinite(cls_grad).all() and cls_grad.abs().sum() > 0
    assert box_grad is not None and torch.isfinite(box_grad).all() and box_grad.abs().sum() > 0


@pytest.mark.parametrize("loss", ["focal", "softmax_focal"])
@pytest.mark.parametrize("box_head", ["l1", "dfl"])
def test_inference_outputs(loss, box_head):
    model = _model(loss, box_head=box_head).eval()
    with torch.no_grad():
        out = model([torch.rand(3, SIZE, SIZE)])[0]
    assert out["boxes"].shape[1] == 4 and len(out["boxes"]) <= 100
    assert ((out["scores"] >= 0) & (out["scores"] <= 1)).all()
    assert (out["labels"] < NUM_CLASSES).all()  # the softmax background class is never a detection


def test_prior_probability_init():
    """Lin et al.: every class starts at p = 0.01 (sigmoid), and the softmax head gives each fg
    class 0.01."""
    for loss in ("focal", "softmax_focal"):
        model = _model(loss)
        bias = model.head.classification_head.cls_logits.bias.detach()
        num_anchors = model.anchor_generator.num_anchors_per_location()[0]
        logits = bias.view(num_anchors, -1)[0]
        p = logits.softmax(-1)[:NUM_CLASSES] if loss == "softmax_focal" else logits.sigmoid()
        torch.testing.assert_close(p, torch.full((NUM_CLASSES,), 0.01), rtol=1e-4, atol=1e-6)


def test_per_class_alpha_trains_and_a_constant_list_is_the_float():
    images, targets = _batch()
    model_cfg = RetinaNetCfg(fpn_channels=64, head_convs=1)
    losses = {}
    for alpha in (0.25, (0.25,) * NUM_CLASSES, (0.1, 0.5, 0.9)):
        torch.manual_seed(0)
        model = build_retinanet(model_cfg, LossCfg("focal", alpha), NUM_CLASSES, SIZE).train()
        out = model(images, targets)
        total = sum(out.values())
        total.backward()
        grad = model.head.classification_head.cls_logits.weight.grad
        assert torch.isfinite(total) and torch.isfinite(grad).all() and grad.abs().sum() > 0
        losses[alpha] = out["classification"].detach()
    torch.testing.assert_close(losses[(0.25,) * NUM_CLASSES], losses[0.25])
    assert not torch.allclose(losses[(0.1, 0.5, 0.9)], losses[0.25])


def test_per_class_alpha_of_the_wrong_length_is_refused_at_build():
    from focalbench.errors import InputError

    with pytest.raises(InputError, match="loss.alpha has 2 per-class weights; the dataset has 3"):
        build_retinanet(RetinaNetCfg(), LossCfg("focal", (0.5, 0.5)), NUM_CLASSES, SIZE)

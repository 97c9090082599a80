"""The shared classification loss (models/criterion.py) against torch/torchvision computed here."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, sigmoid_focal_loss

from focalbench.config import LossCfg
from focalbench.errors import InputError
from focalbench.models.criterion import ClassificationLoss

B, N, C = 2, 5, 3
# positives: image 0 slots 1 and 3, image 1 slot 0 (image 0 has two, image 1 one)
BATCH_IDX, SLOT_IDX, LABELS = (
    torch.tensor([0, 0, 1]),
    torch.tensor([1, 3, 0]),
    torch.tensor([2, 0, 1]),
)
NUM_POS = torch.tensor([2, 1])
PRED = torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 3.0, 5.0], [2.0, 2.0, 6.0, 6.0]])
GT = torch.tensor([[0.0, 0.0, 4.0, 2.0], [1.0, 1.0, 3.0, 5.0], [3.0, 3.0, 7.0, 7.0]])


def _logits(k):
    return torch.randn(B, N, k, generator=torch.Generator().manual_seed(0))


def _one_hot(value):
    target = torch.zeros(B, N, C)
    target[BATCH_IDX, SLOT_IDX, LABELS] = value
    return target


@pytest.mark.parametrize("normalization", ["num_pos_batch", "num_pos_per_image"])
def test_sigmoid_focal_is_torchvisions_normalized_by_the_rule(normalization):
    logits = _logits(C)
    loss = ClassificationLoss(LossCfg("focal", 0.25, 2.0, normalization=normalization))
    ours = loss(logits, BATCH_IDX, SLOT_IDX, LABELS, NUM_POS, PRED, GT)
    per_image = sigmoid_focal_loss(logits, _one_hot(1.0), 0.25, 2.0).sum((1, 2))  # [B]
    expected = (
        per_image.sum() / 3 if normalization == "num_pos_batch" else (per_image / NUM_POS).mean()
    )
    torch.testing.assert_close(ours, expected)


def test_ignored_slots_add_nothing():
    logits = _logits(C)
    valid = torch.ones(B, N, dtype=torch.bool)
    valid[0, 4] = valid[1, 2] = False
    loss = ClassificationLoss(LossCfg("bce", None, 0.0))
    ours = loss(logits, BATCH_IDX, SLOT_IDX, LABELS, NUM_POS, PRED, GT, valid=valid)
    bce = F.binary_cross_entropy_with_logits(logits, _one_hot(1.0), reduction="none")
    torch.testing.assert_close(ours, (bce * valid[..., None]).sum() / 3)


def test_qfl_targets_are_the_iou_of_each_positives_box():
    logits = _logits(C)
    loss = ClassificationLoss(LossCfg("qfl", None, 0.0, beta=2.0))
    ours = loss(logits, BATCH_IDX, SLOT_IDX, LABELS, NUM_POS, PRED, GT)
    iou = box_iou(PRED, GT).diagonal()  # 0.5, 1, 9/23
    target = _one_hot(iou)
    p = logits.sigmoid()  # QFL: |y - p|^beta BCE(x, y)
    qfl = (target - p).abs() ** 2 * F.binary_cross_entropy_with_logits(
        logits, target, reduction="none"
    )
    torch.testing.assert_close(ours, qfl.sum() / 3)


def test_softmax_with_a_noobj_weight_is_detrs_weighted_cross_entropy():
    logits = _logits(C + 1)
    loss = ClassificationLoss(LossCfg("ce", None, 0.0), noobj_weight=0.1)
    ours = loss(logits, BATCH_IDX, SLOT_IDX, LABELS, NUM_POS, PRED, GT)
    target = torch.full((B, N), C)  # no-object, then the positives' classes
    target[BATCH_IDX, SLOT_IDX] = LABELS
    weight = torch.tensor([1.0] * C + [0.1])  # DETR's empty_weight
    expected = F.cross_entropy(logits.flatten(0, 1), target.flatten(), weight=weight)
    torch.testing.assert_close(ours, expected)


def test_softmax_without_it_sums_over_slots_and_normalizes_by_positives():
    logits = _logits(C + 1)
    valid = torch.ones(B, N, dtype=torch.bool)
    valid[1, 4] = False
    loss = ClassificationLoss(LossCfg("ce", None, 0.0, normalization="num_pos_per_image"))
    ours = loss(logits, BATCH_IDX, SLOT_IDX, LABELS, NUM_POS, PRED, GT, valid=valid)
    target = torch.full((B, N), C)
    target[BATCH_IDX, SLOT_IDX] = LABELS
    ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view(B, N)
    torch.testing.assert_close(ours, ((ce * valid).sum(1) / NUM_POS).mean())


def test_scores_drop_the_background_class():
    logits = _logits(C + 1)
    softmax = ClassificationLoss(LossCfg("ce", None, 0.0))
    torch.testing.assert_close(softmax.scores(logits, C), logits.softmax(-1)[..., :C])
    sigmoid = ClassificationLoss(LossCfg("focal"))
    torch.testing.assert_close(sigmoid.scores(logits[..., :C], C), logits[..., :C].sigmoid())
    assert softmax.out_channels(C) == C + 1 and sigmoid.out_channels(C) == C


def test_a_box_loss_is_refused():
    # no config group names dfl (LossCfg refuses it), so a stand-in config
    cfg = SimpleNamespace(name="dfl", params={}, normalization="num_pos_batch")
    with pytest.raises(ValueError, match="loss 'dfl' is a box loss, not a classification loss"):
        ClassificationLoss(cfg)


@pytest.mark.parametrize("normalization", ["num_pos_batch", "num_pos_per_image"])
def test_per_class_alpha_is_torchvisions_class_by_class(normalization):
    """loss=focal loss.alpha=[a_1, ..., a_C]: class c's column is torchvision's at alpha a_c."""
    logits = _logits(C)
    alpha = (0.1, 0.5, 0.9)
    loss = ClassificationLoss(LossCfg("focal", alpha, 2.0, normalization=normalization))
    ours = loss(logits, BATCH_IDX, SLOT_IDX, LABELS, NUM_POS, PRED, GT)
    target = _one_hot(1.0)
    per_image = sum(
        sigmoid_focal_loss(logits[..., c], target[..., c], a, 2.0).sum(1)
        for c, a in enumerate(alpha)
    )  # [B]
    expected = (
        per_image.sum() / 3 if normalization == "num_pos_batch" else (per_image / NUM_POS).mean()
    )
    torch.testing.assert_close(ours, expected)


def test_per_class_alpha_length_is_checked_against_the_dataset():
    focal = ClassificationLoss(LossCfg("focal", (0.2, 0.3)))
    focal.check_num_classes(2)  # one weight per class
    with pytest.raises(InputError) as info:
        focal.check_num_classes(3)
    assert str(info.value) == (
        "loss.alpha has 2 per-class weights; the dataset has 3 classes, so give 3 (one per class)"
    )
    softmax = ClassificationLoss(LossCfg("softmax_focal", (0.2, 0.3, 0.4)))
    softmax.check_num_classes(2)  # then the background
    with pytest.raises(InputError, match="so give 4 .one per class, then the background"):
        softmax.check_num_classes(3)
    ClassificationLoss(LossCfg("focal", 0.25)).check_num_classes(7)  # a float fits any dataset


def test_an_unresolved_alpha_word_is_refused():
    with pytest.raises(ValueError, match="loss.alpha=inverse_freq is resolved from the training"):
        ClassificationLoss(LossCfg("focal", "inverse_freq"))

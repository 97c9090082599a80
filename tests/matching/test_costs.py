"""Class and box costs against float64 formulas written here (issue 6)."""

import math

import pytest
import torch
from torchvision.ops import box_iou, generalized_box_iou

from focalbench.matching import (
    MATCH_COSTS,
    box_cxcywh_to_xyxy,
    box_iou_giou,
    box_xyxy_to_cxcywh,
    class_cost,
    get_match_cost,
    giou_cost,
    l1_cost,
)


def reference_cost(name, logits, labels, alpha, gamma, softmax):
    """The issue's formulas, element by element in Python floats (float64)."""
    Q, K = logits.shape
    C = K - 1 if softmax else K
    rows = logits.double().tolist()

    def probs(row):
        if softmax:
            z = sum(math.exp(v) for v in row)
            return [math.exp(v) / z for v in row[:C]]
        return [1 / (1 + math.exp(-v)) for v in row]

    w_pos, w_neg = (1.0, 1.0) if alpha is None else (alpha, 1 - alpha)

    def pos(p):
        return w_pos * (1 - p) ** gamma * -math.log(p)

    def neg(p):
        return w_neg * p**gamma * -math.log(1 - p)

    out = torch.zeros(Q, len(labels), dtype=torch.float64)
    for q in range(Q):
        p = probs(rows[q])
        for t, label in enumerate(labels.tolist()):
            if name == "prob":
                out[q, t] = -p[label]
            elif name == "ce":
                out[q, t] = -math.log(p[label])
            elif name == "focal":
                out[q, t] = pos(p[label]) - neg(p[label])
            else:  # focal_full
                out[q, t] = pos(p[label]) + sum(neg(pc) for pc in p) - neg(p[label])
    return out


@pytest.mark.parametrize("name", sorted(MATCH_COSTS))
@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (0.5, 0.0), (None, 1.0), (0.75, 0.5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cost_matches_formula(name, softmax, alpha, gamma, dtype):
    g = torch.Generator().manual_seed(hash((name, softmax, alpha, gamma)) % 2**31)
    Q, C, T = 7, 4, 5
    logits = (torch.randn(Q, C + softmax, generator=g) * 3).to(dtype)
    labels = torch.randint(0, C, (T,), generator=g)
    cost = class_cost(name, logits, labels, alpha=alpha, gamma=gamma, softmax=softmax)
    assert cost.shape == (Q, T) and cost.dtype == dtype
    expected = reference_cost(name, logits, labels, alpha, gamma, softmax)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(cost.double(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", sorted(MATCH_COSTS))
@pytest.mark.parametrize("softmax", [False, True])
def test_extreme_logits_stay_finite_and_accurate(name, softmax):
    # 1 - sigmoid(x) rounds to 0 in float32 beyond ~16.6: log(1 - p) must come from the logits
    logits = torch.tensor([[30.0, -30.0, 100.0], [-100.0, 17.0, 0.0], [60.0, 2.0, -60.0]])
    labels = torch.tensor([0, 1, 1, 0])
    cost = class_cost(name, logits, labels, 0.25, 0.5, softmax=softmax)
    assert torch.isfinite(cost).all()
    exact = class_cost(name, logits.double(), labels, 0.25, 0.5, softmax=softmax)
    torch.testing.assert_close(cost.double(), exact, rtol=1e-5, atol=1e-5)


def test_half_precision_logits_are_computed_in_float32():
    logits = torch.randn(6, 3).bfloat16()
    cost = class_cost("focal", logits, torch.tensor([0, 2]))
    assert cost.dtype == torch.float32
    torch.testing.assert_close(cost, class_cost("focal", logits.float(), torch.tensor([0, 2])))


def test_focal_at_half_alpha_gamma_zero_is_half_the_bce_difference():
    logits, labels = torch.randn(5, 3).double(), torch.tensor([1, 0, 1])
    x = logits[:, labels]
    bce_diff = torch.nn.functional.softplus(-x) - torch.nn.functional.softplus(
        x
    )  # -log p + log(1-p)
    torch.testing.assert_close(class_cost("focal", logits, labels, 0.5, 0.0), 0.5 * bce_diff)


def test_no_ground_truth_gives_an_empty_matrix():
    for name in MATCH_COSTS:
        assert class_cost(name, torch.randn(4, 3), torch.zeros(0, dtype=torch.long)).shape == (4, 0)


def test_errors_name_the_choices():
    with pytest.raises(ValueError, match=r"unknown match cost 'l2'; choose from \['ce', 'focal'"):
        class_cost("l2", torch.randn(2, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        class_cost("ce", torch.randn(2, 3), torch.tensor([3]))
    with pytest.raises(
        ValueError, match=r"labels must lie in \[0, 2\)"
    ):  # softmax: last is no-object
        class_cost("ce", torch.randn(2, 3), torch.tensor([2]), softmax=True)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        class_cost("focal", torch.randn(2, 3), torch.tensor([0]), gamma=-1.0)
    with pytest.raises(ValueError, match="expects logits"):
        class_cost("focal", torch.randn(2, 3, 1), torch.tensor([0]))


def test_every_cost_has_a_summary():
    for name, spec in MATCH_COSTS.items():
        assert spec.name == name and spec.summary and "\n" not in spec.summary
    assert get_match_cost("FOCAL").name == "focal"


def random_xyxy(n, generator):
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 0.7
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 0.3 + 0.01
    return torch.cat([xy, xy + wh], dim=1)


def test_box_costs_match_torchvision_and_cdist():
    g = torch.Generator().manual_seed(0)
    a, b = random_xyxy(9, g), random_xyxy(4, g)
    iou, giou = box_iou_giou(a, b)
    torch.testing.assert_close(iou, box_iou(a, b))
    torch.testing.assert_close(giou, generalized_box_iou(a, b))
    torch.testing.assert_close(giou_cost(a, b), -generalized_box_iou(a, b))
    ca, cb = box_xyxy_to_cxcywh(a), box_xyxy_to_cxcywh(b)
    torch.testing.assert_close(box_cxcywh_to_xyxy(ca), a)
    expected = (ca[:, None, :] - cb[None, :, :]).abs().sum(-1)
    torch.testing.assert_close(l1_cost(ca, cb), expected)


def test_degenerate_boxes_stay_finite():
    # two zero-area boxes: torchvision gives 0/0 = NaN; we define IoU = GIoU = 0
    zero = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1]])
    iou, giou = box_iou_giou(zero, zero)
    assert torch.equal(iou, torch.zeros(2, 2)) and torch.equal(giou, torch.zeros(2, 2))
    # a zero-area box against a real one is torchvision's value (IoU 0; GIoU 0 - 0.75/1, by hand:
    # hull [0, 1]^2 of area 1, union 0.25)
    real = torch.tensor([[0.0, 0.0, 0.5, 0.5]])
    point = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    iou, giou = box_iou_giou(point, real)
    torch.testing.assert_close(iou, torch.tensor([[0.0]]))
    torch.testing.assert_close(giou, torch.tensor([[-0.75]]))


def test_box_conversion_keeps_leading_dims():
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4]]])  # [B=1, Q=1, 4] cxcywh
    torch.testing.assert_close(box_cxcywh_to_xyxy(boxes), torch.tensor([[[0.4, 0.3, 0.6, 0.7]]]))

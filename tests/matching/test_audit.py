"""The matching audit: loss-optimal pair costs, agreement/regret, instability (issue 6)."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from focalbench.matching import (
    MatchInstability,
    agreement_and_regret,
    assign,
    class_cost,
    sigmoid_pair_cost,
    softmax_pair_cost,
)


def test_sigmoid_pair_cost_of_the_focal_loss_is_the_focal_cost():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, 4, generator=g).double() * 3, torch.tensor([0, 3, 3])

    def loss(x, t):
        return sigmoid_focal_loss(x, t, alpha=0.25, gamma=2.0)

    torch.testing.assert_close(
        sigmoid_pair_cost(loss, logits, labels, 1.0), class_cost("focal", logits, labels, 0.25, 2.0)
    )


def test_softmax_pair_cost_minimizes_the_weighted_ce_total():
    # DETR's CE: every unmatched query is charged noobj_weight * CE(no-object)
    Q, K, T, w = 5, 4, 3, 0.1
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        logits = torch.randn(Q, K, generator=g).double() * 2
        labels = torch.randint(0, K - 1, (T,), generator=g)

        def total(perm, logits=logits, labels=labels):
            target = torch.full((Q,), K - 1)
            target[list(perm)] = labels
            weight = torch.where(target == K - 1, w, 1.0).double()
            return (F.cross_entropy(logits, target, reduction="none") * weight).sum().item()

        def loss(x, y):
            return F.cross_entropy(x, y, reduction="none")

        best = min(total(p) for p in itertools.permutations(range(Q), T))
        i, j = assign(softmax_pair_cost(loss, logits, labels, w))
        assert total(i[j.argsort()].tolist()) == pytest.approx(best, abs=1e-9)


def test_agreement_and_regret():
    opt = torch.tensor([[0.0, 5.0], [1.0, 0.0], [3.0, 3.0]])  # optimal: t0->q0, t1->q1, total 0
    same = opt * 2 + 1
    assert agreement_and_regret([same], [opt]) == (1.0, 0.0)
    swapped = torch.tensor([[9.0, 0.0], [0.0, 9.0], [9.0, 9.0]])  # t0->q1, t1->q0: total 1 + 5
    assert agreement_and_regret([swapped], [opt]) == (0.0, pytest.approx(6.0 / 2))
    empty = torch.zeros(3, 0)
    assert agreement_and_regret([swapped, empty], [opt, empty])[0] == 0.0
    assert all(math.isnan(v) for v in agreement_and_regret([empty], [empty]))


def test_instability():
    tracker = MatchInstability()
    first = [(torch.tensor([0, 2]), torch.tensor([0, 1])), (torch.tensor([4]), torch.tensor([0]))]
    assert math.isnan(tracker.update(first, [2, 1]))
    assert tracker.update(first, [2, 1]) == 0.0
    moved = [(torch.tensor([0, 3]), torch.tensor([0, 1])), (torch.tensor([5]), torch.tensor([0]))]
    assert tracker.update(moved, [2, 1]) == pytest.approx(2 / 3)
    assert math.isnan(tracker.update(moved[:1], [2]))  # another probe: no comparison

"""The matcher: batched equals per-image, and brute force over all assignments (issue 6)."""

import itertools

import pytest
import torch
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from focalbench.matching import HungarianMatcher, assign, class_cost, query_of_target


def random_targets(sizes, num_classes, generator):
    targets = []
    for T in sizes:
        cxcy = torch.rand(T, 2, generator=generator) * 0.6 + 0.2
        wh = torch.rand(T, 2, generator=generator) * 0.3 + 0.05
        labels = torch.randint(0, num_classes, (T,), generator=generator)
        targets.append({"labels": labels, "boxes": torch.cat([cxcy, wh], dim=1)})
    return targets


@pytest.mark.parametrize("cost", ["prob", "ce", "focal", "focal_full"])
@pytest.mark.parametrize("softmax", [False, True])
def test_batched_equals_per_image(cost, softmax):
    g = torch.Generator().manual_seed(1)
    B, Q, C = 5, 12, 4
    sizes = [3, 0, 7, 1, 12]
    logits = torch.randn(B, Q, C + softmax, generator=g) * 2
    boxes = torch.rand(B, Q, 4, generator=g) * 0.5 + 0.1
    targets = random_targets(sizes, C, g)
    matcher = HungarianMatcher(cost, 2.0, 5.0, 2.0, alpha=0.25, gamma=2.0, softmax=softmax)
    batched = matcher(logits, boxes, targets)
    costs = matcher.cost_matrices(logits, boxes, targets)
    for b, (i, j) in enumerate(batched):
        single = matcher(logits[b : b + 1], boxes[b : b + 1], [targets[b]])[0]
        assert torch.equal(i, single[0]) and torch.equal(j, single[1])
        assert len(i) == len(j) == min(Q, sizes[b])
        assert costs[b].shape == (Q, sizes[b])
        if sizes[b]:  # the block is the image's own cost, recomputed here from the pieces
            gt = targets[b]["boxes"]
            manual = 2.0 * class_cost(cost, logits[b], targets[b]["labels"], 0.25, 2.0, softmax)
            manual += 5.0 * (boxes[b][:, None, :] - gt[None, :, :]).abs().sum(-1)
            manual -= 2.0 * generalized_box_iou(
                box_convert(boxes[b], "cxcywh", "xyxy"), box_convert(gt, "cxcywh", "xyxy")
            )
            torch.testing.assert_close(costs[b], manual)
            assert torch.equal(i, assign(manual)[0]) and torch.equal(j, assign(manual)[1])


def test_more_targets_than_queries_and_no_targets():
    g = torch.Generator().manual_seed(2)
    logits, boxes = torch.randn(2, 3, 2, generator=g), torch.rand(2, 3, 4, generator=g) * 0.5
    targets = random_targets([5, 0], 2, g)
    (i0, j0), (i1, j1) = HungarianMatcher("focal")(logits, boxes, targets)
    assert len(i0) == len(j0) == 3 and len(set(j0.tolist())) == 3
    assert len(i1) == len(j1) == 0
    assert (query_of_target((i0, j0), 5) >= 0).sum() == 3


def test_nan_costs_do_not_crash_the_matcher():
    cost = torch.tensor([[float("nan"), 1.0], [0.0, float("inf")], [2.0, 3.0]])
    i, j = assign(cost)
    assert len(i) == 2


def brute_force(total, num_queries, num_targets):
    """min over all injective maps target -> query of total(assignment)."""
    return min(total(perm) for perm in itertools.permutations(range(num_queries), num_targets))


def total_focal_loss(logits, labels, queries, alpha, gamma):
    """Total sigmoid focal loss over all [Q, C] entries when target t goes to queries[t].

    Independent of the matching code: torchvision's loss on the full one-hot target matrix.
    """
    target = torch.zeros_like(logits)
    target[list(queries), labels] = 1.0
    return sigmoid_focal_loss(logits, target, alpha=alpha, gamma=gamma, reduction="sum").item()


def loss_of_matching(name, logits, labels, alpha, gamma):
    i, j = assign(class_cost(name, logits, labels, alpha, gamma))
    queries = [0] * len(labels)
    for q, t in zip(i.tolist(), j.tolist()):
        queries[t] = q
    return total_focal_loss(logits, labels, queries, alpha, gamma)


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (0.5, 0.0), (0.75, 1.0)])
def test_focal_cost_attains_the_minimum_total_focal_loss(alpha, gamma):
    Q, C, T = 5, 3, 3
    focal_full_misses = 0
    for seed in range(30):
        g = torch.Generator().manual_seed(seed)
        logits = (torch.randn(Q, C, generator=g) * 2.5).double()
        labels = torch.randint(0, C, (T,), generator=g)  # repeated classes included

        def total(perm, logits=logits, labels=labels):
            return total_focal_loss(logits, labels, perm, alpha, gamma)

        best = brute_force(total, Q, T)
        assert loss_of_matching("focal", logits, labels, alpha, gamma) == pytest.approx(
            best, abs=1e-9
        )
        full = loss_of_matching("focal_full", logits, labels, alpha, gamma)
        assert full >= best - 1e-9
        focal_full_misses += full > best + 1e-9
    assert focal_full_misses > 0  # focal_full is not loss-optimal in general


def test_focal_full_counterexample():
    # One object (class 0), two queries. Query 0 is the better class-0 detector (p = 0.73) but also
    # fires on class 1 (p = 0.95); query 1 is a weaker class-0 detector (p = 0.5) that is quiet on
    # class 1. Whoever is matched, query 0's class-1 negative stays in the total loss, so the
    # loss-optimal match is query 0 - but focal_full charges that negative only to a matched query
    # and picks query 1.
    logits = torch.tensor([[1.0, 3.0], [0.0, -4.0]], dtype=torch.float64)
    labels = torch.tensor([0])
    losses = [total_focal_loss(logits, labels, [q], 0.25, 2.0) for q in range(2)]
    assert losses[0] < losses[1]
    assert assign(class_cost("focal", logits, labels))[0].tolist() == [0]
    assert assign(class_cost("focal_full", logits, labels))[0].tolist() == [1]

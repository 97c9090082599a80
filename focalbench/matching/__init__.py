"""Hungarian matching for DETR-style models: class costs by name, box costs, the matcher, the audit.

A library on its own: imports only torch and scipy.

    from focalbench.matching import class_cost, HungarianMatcher, MATCH_COSTS
    class_cost("focal", logits, labels, alpha=0.25, gamma=2.0)  # [Q, C], [T] -> cost [Q, T]
"""

from focalbench.matching.audit import (
    MatchInstability,
    agreement_and_regret,
    sigmoid_pair_cost,
    softmax_pair_cost,
)
from focalbench.matching.costs import (
    MATCH_COSTS,
    CostSpec,
    box_cxcywh_to_xyxy,
    box_iou_giou,
    box_xyxy_to_cxcywh,
    class_cost,
    class_log_probs,
    get_match_cost,
    giou_cost,
    l1_cost,
)
from focalbench.matching.hungarian import HungarianMatcher, assign, query_of_target

__all__ = [
    "MATCH_COSTS",
    "CostSpec",
    "HungarianMatcher",
    "MatchInstability",
    "agreement_and_regret",
    "assign",
    "box_cxcywh_to_xyxy",
    "box_iou_giou",
    "box_xyxy_to_cxcywh",
    "class_cost",
    "class_log_probs",
    "get_match_cost",
    "giou_cost",
    "l1_cost",
    "query_of_target",
    "sigmoid_pair_cost",
    "softmax_pair_cost",
]

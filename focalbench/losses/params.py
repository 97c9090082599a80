"""What each registered loss is, without its function: kind, target layout, tunable parameters.

The one table both sides read: `registry.py` pairs every row with its function (and checks that the
function takes these parameters with these defaults), and `focalbench.config` reads it to know
which `loss.*` options a loss takes, hence which enter the run id, without importing torch. So this
module imports nothing, and `focalbench.losses` loads its torch modules only when a name is used.
"""

from __future__ import annotations

from typing import Any, NamedTuple

KINDS = ("sigmoid", "softmax", "box")
TARGETS = ("binary", "iou", "label", "distance")


class LossInfo(NamedTuple):
    """kind: how the head's scores are read: "sigmoid" (one independent score per class, no
        background class), "softmax" (the head also predicts a background class), "box" (a
        box-side distribution, not a classification loss).
    target: what the loss is given: "binary" ([N, C] one-hot / soft in [0, 1]), "iou" ([N, C] IoU
        at the gt class), "label" ([N] class indices), "distance" ([N] float in [0, B-1]).
    params: the tunable hyper-parameters -> their defaults (the function's own defaults).
    """

    kind: str
    target: str
    params: dict[str, Any]


LOSS_TABLE: dict[str, LossInfo] = {
    "focal": LossInfo("sigmoid", "binary", {"alpha": 0.25, "gamma": 2.0}),
    "softmax_focal": LossInfo("softmax", "label", {"alpha": None, "gamma": 2.0}),
    "bce": LossInfo("sigmoid", "binary", {}),
    "ce": LossInfo("softmax", "label", {}),
    "qfl": LossInfo("sigmoid", "iou", {"beta": 2.0}),
    # iou_weighted is a parameter of the function, not a config option (LossCfg has no such field)
    "vfl": LossInfo("sigmoid", "iou", {"alpha": 0.75, "gamma": 2.0, "iou_weighted": True}),
    "dfl": LossInfo("box", "distance", {}),
    "poly1": LossInfo("sigmoid", "binary", {"alpha": 0.25, "gamma": 2.0, "epsilon": 1.0}),
    # momentum 0 as mmdet's GHMC class default; its RetinaNet GHM config (and conf/loss) use 0.75
    "ghmc": LossInfo("sigmoid", "binary", {"bins": 30, "momentum": 0.0}),
}

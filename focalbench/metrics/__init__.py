"""Metrics: COCO mAP (identical to pycocotools, faster) and detection calibration (LaECE0, LaACE0,
LRP, D-ECE, Brier) of any COCO results file. numpy only on the import path; matplotlib is imported
when plotting.

    from focalbench.metrics import evaluate, evaluate_files, COCO_STAT_KEYS, plot_reliability

The paired bootstrap of `focalbench compare` (bootstrap.paired_bootstrap over
resample.ResampledMetrics, which need scipy.sparse) is imported from its modules, not here.
"""

import warnings

# `python -m focalbench.metrics.evaluate` imports this package first, which already imports the
# evaluate module for the re-export below; runpy then warns that the module is in sys.modules.
# Harmless here (the module has no state), so that one message is silenced.
warnings.filterwarnings(
    "ignore", message="'focalbench.metrics.evaluate' found in sys.modules", category=RuntimeWarning
)

from .coco import COCO_STAT_KEYS  # noqa: E402
from .evaluate import evaluate, evaluate_files  # noqa: E402
from .plot import plot_reliability  # noqa: E402

__all__ = ["COCO_STAT_KEYS", "evaluate", "evaluate_files", "plot_reliability"]

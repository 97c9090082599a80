"""Datasets: the embedded synthetic shapes and real COCO, both read by one COCO-json loader.

Public API (stable: the CLI, scripts and tests use these names): synthesize, subset_coco,
check_coco, CheckReport, load_coco_json, CocoDetection, collate, SYNTH_CATEGORIES.
"""

from focalbench.data.coco import CheckReport, check_coco, load_coco_json, subset_coco
from focalbench.data.dataset import CocoDetection, collate
from focalbench.data.synthetic import SYNTH_CATEGORIES, synthesize

__all__ = [
    "SYNTH_CATEGORIES",
    "CheckReport",
    "CocoDetection",
    "check_coco",
    "collate",
    "load_coco_json",
    "subset_coco",
    "synthesize",
]

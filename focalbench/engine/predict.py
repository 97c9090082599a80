"""Inference on the validation set -> a COCO results list (image_id, category_id, bbox xywh,
score), and `evaluate`: those detections written to the run folder and scored (mAP + calibration).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from focalbench.results.store import atomic_write_text


@torch.inference_mode()
def predict(
    model: nn.Module, loader, cat_ids: list[int], image_size: int, device: torch.device
) -> list[dict]:
    """Detections in the original image coordinates of each image.

    The dataset resizes every image to image_size x image_size (aspect not kept), so boxes are
    scaled back by (w / S, h / S). Labels are contiguous indices; `cat_ids` maps them back to COCO
    category ids.
    """
    model.eval().to(device)
    results = []
    for images, targets in loader:
        outputs = model([im.to(device) for im in images])
        for out, target in zip(outputs, targets):
            h, w = target["orig_size"]
            boxes = out["boxes"].float().cpu()  # [D, 4] xyxy in resized pixels
            boxes[:, 0::2] *= w / image_size
            boxes[:, 1::2] *= h / image_size
            boxes[:, 2:] -= boxes[:, :2]  # -> xywh
            keep = (boxes[:, 2] > 0.01) & (
                boxes[:, 3] > 0.01
            )  # clipping at a border can flatten a box
            scores, labels = out["scores"].cpu()[keep], out["labels"].cpu()[keep]
            for box, score, label in zip(boxes[keep].tolist(), scores.tolist(), labels.tolist()):
                results.append(
                    {
                        "image_id": int(target["image_id"]),
                        "category_id": cat_ids[label],
                        "bbox": [round(v, 2) for v in box],
                        "score": round(float(score), 5),
                    }
                )
    return results


def evaluate(
    model: nn.Module, loader, val_ds, image_size: int, device: torch.device, run_dir: Path
) -> dict[str, Any]:
    """predict() on the validation loader -> run_dir/detections.json, then COCO mAP and the
    calibration metrics of focalbench.metrics.evaluate against val_ds's annotation file."""
    from focalbench.metrics import evaluate as score

    dets = predict(model, loader, val_ds.cat_ids, image_size, device)
    atomic_write_text(run_dir / "detections.json", json.dumps(dets))
    gt = json.loads(Path(val_ds.ann_file).read_text())
    return score(gt, dets)

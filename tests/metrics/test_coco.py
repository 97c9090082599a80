"""The numpy COCOeval equals pycocotools: stats to 1e-12, and the whole precision/recall arrays."""

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from focalbench.metrics import COCO_STAT_KEYS, evaluate
from focalbench.metrics.calibration import candidates
from focalbench.metrics.coco import class_ap, coco_eval_numpy
from focalbench.metrics.evaluate import detection_set


def synthetic(seed, n_img=250, n_cat=6):
    """Noisy detections on random boxes, with every case COCOeval treats specially: crowd regions,
    'area' unlike the box (area ranges use it), boxes of all three sizes, an annotation with id 0,
    coarse scores (ties), more than 100 detections of one class in some images, images without
    ground truth and a class without any."""
    rng = np.random.default_rng(seed)
    cats = [{"id": 10 * (c + 1), "name": f"c{c}"} for c in range(n_cat + 1)]  # last: no gt
    ids = rng.permutation(np.arange(3, 3 + 2 * n_img, 2))  # sparse, unsorted image ids
    images = [{"id": int(i)} for i in ids]
    anns, dets = [], []
    for img in images:
        gts = []
        for _ in range(rng.integers(0, 9) if rng.random() > 0.1 else 0):
            size = rng.choice([rng.uniform(3, 30), rng.uniform(30, 100), rng.uniform(100, 300)], 2)
            x, y = rng.uniform(0, 500, 2)
            c = cats[rng.integers(0, n_cat)]["id"]
            crowd = int(rng.random() < 0.05)
            area = float(size[0] * size[1] * rng.uniform(0.4, 1.0))
            box = [float(x), float(y), float(size[0]), float(size[1])]
            anns.append(
                {"id": len(anns), "image_id": img["id"], "category_id": c, "iscrowd": crowd}
                | {"bbox": box, "area": area}
            )
            gts.append((x, y, size, c))
        n_det = 130 if rng.random() < 0.03 else int(rng.integers(0, 40))
        for _ in range(n_det):
            if gts and rng.random() < 0.6:
                x, y, size, c = gts[rng.integers(len(gts))]
                xy = [x, y] + rng.normal(0, 0.15, 2) * size
                box = [*xy, *(size * np.exp(rng.normal(0, 0.2, 2)))]
                c = c if rng.random() < 0.85 else cats[rng.integers(0, n_cat + 1)]["id"]
            else:
                box = [*rng.uniform(0, 500, 2), *rng.uniform(2, 200, 2)]
                c = cats[rng.integers(0, n_cat + 1)]["id"]
            # > 100 detections of one class in an image: COCOeval keeps the top 100
            c = cats[0]["id"] if n_det > 100 else c
            score = round(float(rng.beta(2, 2)), 2)
            dets.append(
                {
                    "image_id": img["id"],
                    "category_id": c,
                    "bbox": [float(v) for v in box],
                    "score": score,
                }
            )
    return {"images": images, "annotations": anns, "categories": cats}, dets


def reference(gt, dets):
    """Plain pycocotools, the way its README runs it."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.mark.parametrize("seed", [0, 1])
def test_numpy_backend_equals_pycocotools(seed):
    gt, dets = synthetic(seed)
    ev = reference(gt, dets)
    assert any(a["id"] == 0 for a in gt["annotations"])
    ds = detection_set(gt, dets)
    stats, precision = coco_eval_numpy(ds, candidates(ds))
    np.testing.assert_allclose(stats, ev.stats, rtol=0, atol=1e-12)
    np.testing.assert_allclose(precision, ev.eval["precision"], rtol=0, atol=1e-12)
    # per-class AP straight from pycocotools' precision array
    p = ev.eval["precision"][:, :, :, 0, -1]
    expected = [
        np.mean(p[:, :, k][p[:, :, k] > -1]) if (p[:, :, k] > -1).any() else np.nan
        for k in range(p.shape[2])
    ]
    np.testing.assert_allclose(class_ap(precision), expected, rtol=0, atol=1e-12)
    assert np.isnan(expected[-1])  # the class without ground truth


def test_evaluate_reports_the_same_stats_with_either_backend(capsys):
    gt, dets = synthetic(2, n_img=60)
    fast = evaluate(gt, dets)
    slow = evaluate(gt, dets, map_backend="pycocotools")
    assert capsys.readouterr().out == ""  # pycocotools' prints are silenced
    for key in COCO_STAT_KEYS:
        assert fast[key] == pytest.approx(slow[key], abs=1e-12)
    assert (
        fast["protocol"]["mAP"]["backend"] == "numpy"
        and slow["protocol"]["mAP"]["backend"] == "pycocotools"
    )
    assert {k: v["AP"] for k, v in fast["per_class"].items()} == pytest.approx(
        {k: v["AP"] for k, v in slow["per_class"].items()}, abs=1e-12, nan_ok=True
    )


def test_no_detections_gives_zero_ap_and_minus_one_for_absent_areas():
    gt = {
        "images": [{"id": 1}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "area": 2500}
        ],
    }
    fast, slow = evaluate(gt, []), evaluate(gt, [], map_backend="pycocotools")
    assert [fast[k] for k in COCO_STAT_KEYS] == [slow[k] for k in COCO_STAT_KEYS]
    assert fast["mAP"] == 0.0 and fast["APs"] == -1.0  # no small ground truth: nothing to average

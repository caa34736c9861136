"""Instance segmentation metrics, defined as the field defines them (see shared/REFERENCE.md).

* PQ = DQ x SQ with unique pairs at IoU > 0.5 (Kirillov et al.; HoVer-Net's ``get_fast_pq``).
* AJI (Kumar et al. 2017): every ground-truth nucleus takes the prediction of best IoU (predictions may repeat);
  predictions never used add to the union.
* AJI+ (Graham et al. 2019): as AJI with a one-to-one pairing (Hungarian on IoU).
* Dice: pixel-level foreground Dice.
* Per-class PQ (PanNuke's mPQ): PQ between the instances of one class in ground truth and prediction, per image
  (undefined where the ground truth has none of that class), averaged over images; mPQ averages the classes.
* Detection / type F1 (HoVer-Net): centroids paired within a radius (12 px at 40x), one-to-one, within each image;
  over several images the counts are summed (pooled).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist


def _compact(labels: np.ndarray) -> np.ndarray:
    _, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    return inverse if labels.min() == 0 else inverse + 1


def overlaps(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairwise intersections and sizes of labelled objects.

    Returns
    -------
    intersection : (n_true, n_pred) int
    true_area : (n_true,) int
    pred_area : (n_pred,) int
    Labels are compacted to 1..n first; row i is true object i + 1.
    """
    true, pred = _compact(true), _compact(pred)
    n_true, n_pred = int(true.max()), int(pred.max())
    joint = np.bincount(true.ravel() * (n_pred + 1) + pred.ravel(), minlength=(n_true + 1) * (n_pred + 1))
    joint = joint.reshape(n_true + 1, n_pred + 1)
    return joint[1:, 1:], joint[1:, :].sum(axis=1), joint[:, 1:].sum(axis=0)


def _iou(intersection: np.ndarray, true_area: np.ndarray, pred_area: np.ndarray) -> np.ndarray:
    union = true_area[:, None] + pred_area[None, :] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1), 0.0)


def panoptic_quality(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """DQ, SQ, PQ and the TP/FP/FN counts, pairing at IoU > 0.5 (unique by construction)."""
    intersection, true_area, pred_area = overlaps(true, pred)
    iou = _iou(intersection, true_area, pred_area)
    matched_true, matched_pred = np.nonzero(iou > 0.5)
    tp = matched_true.size
    fp, fn = pred_area.size - tp, true_area.size - tp
    denominator = tp + 0.5 * fp + 0.5 * fn
    dq = tp / denominator if denominator else 1.0
    sq = float(iou[matched_true, matched_pred].mean()) if tp else 0.0
    return {"dq": dq, "sq": sq, "pq": dq * sq, "tp": tp, "fp": fp, "fn": fn}


def aggregated_jaccard(true: np.ndarray, pred: np.ndarray, one_to_one: bool = False) -> float:
    """AJI (``one_to_one=False``) or AJI+ (``one_to_one=True``)."""
    intersection, true_area, pred_area = overlaps(true, pred)
    if true_area.size == 0:
        return 1.0 if pred_area.size == 0 else 0.0
    if pred_area.size == 0:
        return 0.0
    union = true_area[:, None] + pred_area[None, :] - intersection
    iou = _iou(intersection, true_area, pred_area)
    if one_to_one:
        rows, cols = linear_sum_assignment(-iou)
        paired = iou[rows, cols] > 0
        rows, cols = rows[paired], cols[paired]
    else:
        rows = np.arange(true_area.size)
        cols = iou.argmax(axis=1)
        paired = intersection[rows, cols] > 0
        rows, cols = rows[paired], cols[paired]
    total_intersection = intersection[rows, cols].sum()
    total_union = union[rows, cols].sum()
    unpaired_true = np.setdiff1d(np.arange(true_area.size), rows)
    unused_pred = np.setdiff1d(np.arange(pred_area.size), cols)
    total_union += true_area[unpaired_true].sum() + pred_area[unused_pred].sum()
    return float(total_intersection / total_union)


def dice(true: np.ndarray, pred: np.ndarray) -> float:
    """Pixel-level foreground Dice."""
    true_fg, pred_fg = true > 0, pred > 0
    total = true_fg.sum() + pred_fg.sum()
    return float(2 * (true_fg & pred_fg).sum() / total) if total else 1.0


def centroids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """((N, 2) centroids (row, col), (N,) labels) of the objects in a label map."""
    present = np.unique(labels)
    present = present[present != 0]
    if present.size == 0:
        return np.zeros((0, 2)), present
    return np.asarray(ndimage.center_of_mass(labels > 0, labels, present)), present


def pair_centroids(true_xy: np.ndarray, pred_xy: np.ndarray, radius_px: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs of points closer than ``radius_px`` (Hungarian on distance)."""
    if len(true_xy) == 0 or len(pred_xy) == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    distance = cdist(true_xy, pred_xy)
    rows, cols = linear_sum_assignment(np.where(distance <= radius_px, distance, 1e9))
    close = distance[rows, cols] <= radius_px
    return rows[close], cols[close]


def pair_centroids_by_image(
    true_xy_by_image: Sequence[np.ndarray], pred_xy_by_image: Sequence[np.ndarray], radius_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """``pair_centroids`` within each image, so that nuclei of different images never pair; the pairs index the
    images' centroids concatenated in order.

    true_xy_by_image, pred_xy_by_image : per image, (N_i, 2) and (M_i, 2) centroids.
    """
    rows, cols = [np.zeros(0, dtype=int)], [np.zeros(0, dtype=int)]
    true_start = pred_start = 0
    for true_xy, pred_xy in zip(true_xy_by_image, pred_xy_by_image, strict=True):
        image_rows, image_cols = pair_centroids(true_xy, pred_xy, radius_px)
        rows.append(image_rows + true_start)
        cols.append(image_cols + pred_start)
        true_start, pred_start = true_start + len(true_xy), pred_start + len(pred_xy)
    return np.concatenate(rows), np.concatenate(cols)


def truth_shift_px(true_xy: np.ndarray, pred_xy: np.ndarray, radius_px: float, min_pairs: int = 10) -> np.ndarray:
    """How far the truth sits from the predictions as a whole: the median offset (true - predicted) of paired
    centroids, paired first within twice ``radius_px`` and again within ``radius_px`` once that offset is removed.

    Truth drawn on another image and registered to this one (immunofluorescence on IHC) can sit several pixels off
    every nucleus, which centroid matching within ``radius_px`` reads as misses. Returns a (2,) offset in the
    centroids' axes; NaN when fewer than ``min_pairs`` pairs support it.
    """
    shift = np.zeros(2)
    for search_px in (2 * radius_px, radius_px):
        rows, cols = pair_centroids(true_xy - shift, pred_xy, search_px)
        if rows.size < min_pairs:
            return np.full(2, np.nan)
        shift = np.median(true_xy[rows] - pred_xy[cols], axis=0)
    return shift


def f1(tp: int, fp: int, fn: int) -> float:
    """F1 of true positives, false positives and false negatives (1 when there is nothing to find or found)."""
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else 1.0


def detection_and_type_f1(
    true_xy_by_image: Sequence[np.ndarray],
    true_class_by_image: Sequence[np.ndarray],
    pred_xy_by_image: Sequence[np.ndarray],
    pred_class_by_image: Sequence[np.ndarray],
    classes: list[int],
    radius_px: float = 12.0,
) -> dict[str, float]:
    """HoVer-Net's detection F1 and per-class type F1 (Graham et al. 2019; weights 2, 2, 1, 1 as in its compute_stats)
    over one or more images: nuclei are paired within each image, the counts summed over the images.

    Per image: (N_i, 2) true and (M_i, 2) predicted centroids, (N_i,) and (M_i,) classes.
    """
    rows, cols = pair_centroids_by_image(true_xy_by_image, pred_xy_by_image, radius_px)
    true_class, pred_class = np.concatenate(true_class_by_image), np.concatenate(pred_class_by_image)
    tp_detect = rows.size
    fp_detect, fn_detect = len(pred_class) - tp_detect, len(true_class) - tp_detect
    result = {"f1_detection": f1(tp_detect, fp_detect, fn_detect)}
    paired_true, paired_pred = true_class[rows], pred_class[cols]
    unpaired_true = np.delete(true_class, rows)
    unpaired_pred = np.delete(pred_class, cols)
    for cls in classes:
        # HoVer-Net's _f1_type: only pairs where either side is this class count, so there are no true negatives.
        tp = np.sum((paired_true == cls) & (paired_pred == cls))
        fp_paired = np.sum((paired_true != cls) & (paired_pred == cls))
        fn_paired = np.sum((paired_true == cls) & (paired_pred != cls))
        fp_unpaired, fn_unpaired = np.sum(unpaired_pred == cls), np.sum(unpaired_true == cls)
        denominator = 2 * tp + 2 * fp_paired + 2 * fn_paired + fp_unpaired + fn_unpaired
        result[f"f1_type_{cls}"] = float(2 * tp / denominator) if denominator else 1.0
        result[f"n_true_type_{cls}"] = int(np.sum(true_class == cls))  # support: F1 of an absent class says little
    return result


def instances_of_class(labels: np.ndarray, classes: np.ndarray, cls: int) -> np.ndarray:
    """The instance map with only the instances whose class is ``cls``; ``classes[i]`` is label i + 1's."""
    lookup = np.zeros(len(classes) + 1, dtype=np.int64)
    lookup[1:] = np.where(np.asarray(classes) == cls, np.arange(1, len(classes) + 1), 0)
    return lookup[labels]


def class_panoptic_quality(
    true: np.ndarray, true_classes: np.ndarray, pred: np.ndarray, pred_classes: np.ndarray, classes: list[int]
) -> dict[int, float]:
    """PQ of each class in one image, NaN where the ground truth has none of it (PanNuke's convention).

    Parameters
    ----------
    true, pred : (H, W) int instance maps, labels 1..N and 1..M.
    true_classes : (N,) int, class of true label i + 1; pred_classes : (M,) int, likewise.
    """
    result = {}
    for cls in classes:
        true_cls = instances_of_class(true, true_classes, cls)
        if not true_cls.any():
            result[cls] = float("nan")
            continue
        result[cls] = panoptic_quality(true_cls, instances_of_class(pred, pred_classes, cls))["pq"]
    return result


def instance_metrics(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """All instance metrics of one image: dice, aji, aji_plus, dq, sq, pq, tp, fp, fn."""
    return {
        "dice": dice(true, pred),
        "aji": aggregated_jaccard(true, pred),
        "aji_plus": aggregated_jaccard(true, pred, one_to_one=True),
        **panoptic_quality(true, pred),
    }


def majority_types(instances: np.ndarray, types: np.ndarray) -> np.ndarray:
    """(N,) most frequent non-zero type of each instance label 1..N (0 where it has none)."""
    n_instances = int(instances.max())
    n_types = int(types.max()) + 1
    inside = (instances > 0) & (types > 0)
    votes = np.bincount((instances[inside] - 1) * n_types + types[inside], minlength=n_instances * n_types).reshape(
        n_instances, n_types
    )
    return np.where(votes.sum(axis=1) > 0, votes.argmax(axis=1), 0)

"""Where the nuclei are: statistics per tissue region, and the squares a reviewer should look at first.

A tissue region is a connected piece of the tissue mask (a fragment or core of the slide). Review squares are cells of
a fixed grid in microns, ranked by the model's mean confidence in the nuclei they hold.
"""

from __future__ import annotations

import numpy as np
import shapely
from scipy import ndimage

from pathoseg.geometry import area_px_to_mm2
from pathoseg.measure.biomarkers import class_summary, index_confidence_interval, positivity_summary
from pathoseg.tiling.tissue import TissueMask, polygon_mask


def tissue_region_stats(
    tissue: TissueMask,
    origin_xy: tuple[float, float],
    centroids_level0: np.ndarray,
    class_ids: np.ndarray,
    class_names: list[str],
    dab_bins: np.ndarray | None = None,
    max_regions: int = 20,
) -> list[dict]:
    """Counts, densities and class fractions (and positivity with ``dab_bins``) per tissue region.

    Parameters
    ----------
    tissue : the slide's tissue mask.
    origin_xy : level-0 position of the mask's top-left corner (the slide's bounds).
    centroids_level0 : (N, 2) nucleus centroids (x, y) in level-0 pixels.
    class_ids : (N,) model class of each nucleus.
    dab_bins : (N,) DAB intensity bin 0-3 (IHC), or None.
    max_regions : the largest regions are listed, in decreasing area.

    Returns
    -------
    list of dicts: ``id`` (1 = largest), ``bbox_level0`` [x, y, w, h], ``area_mm2``, the ``class_summary`` keys,
    and ``ihc`` (positivity summary) when ``dab_bins`` is given. Nuclei whose centroid falls outside the mask
    count for no region.
    """
    labels, n_regions = ndimage.label(tissue.mask)
    if n_regions == 0:
        return []
    areas_px = np.bincount(labels.ravel(), minlength=n_regions + 1)[1:]
    mask_xy = (np.asarray(centroids_level0, float).reshape(-1, 2) - origin_xy) / tissue.level0_per_px
    cols = np.clip(mask_xy[:, 0].astype(int), 0, labels.shape[1] - 1)
    rows = np.clip(mask_xy[:, 1].astype(int), 0, labels.shape[0] - 1)
    nucleus_region = labels[rows, cols]
    boxes = ndimage.find_objects(labels)
    stats = []
    for rank, label in enumerate(np.argsort(-areas_px, kind="stable")[:max_regions] + 1, start=1):
        rows_slice, cols_slice = boxes[label - 1]
        area_mm2 = area_px_to_mm2(float(areas_px[label - 1]), tissue.mpp)
        inside = nucleus_region == label
        bbox = [
            origin_xy[0] + cols_slice.start * tissue.level0_per_px,
            origin_xy[1] + rows_slice.start * tissue.level0_per_px,
            (cols_slice.stop - cols_slice.start) * tissue.level0_per_px,
            (rows_slice.stop - rows_slice.start) * tissue.level0_per_px,
        ]
        entry = {
            "id": rank,
            "bbox_level0": [round(v) for v in bbox],
            "area_mm2": round(area_mm2, 5),
            **class_summary(class_ids[inside], class_names, area_mm2),
        }
        if dab_bins is not None:
            entry["ihc"] = positivity_summary(dab_bins[inside])
        stats.append(entry)
    return stats


def annotation_stats(
    annotations: list,
    tissue: TissueMask,
    origin_xy: tuple[float, float],
    centroids_level0: np.ndarray,
    class_ids: np.ndarray,
    class_names: list[str],
    slide_mpp: float,
    dab_bins: np.ndarray | None = None,
) -> list[dict]:
    """Counts, densities and class fractions (and positivity with ``dab_bins``) per annotation of a region of
    interest, in the annotations' order.

    Parameters
    ----------
    annotations : ``io.annotations.Annotation`` (name, polygon in level-0 pixels).
    tissue : the tissue mask (densities are per mm² of tissue inside the annotation).
    origin_xy, centroids_level0, class_ids, class_names : as ``tissue_region_stats``.
    slide_mpp : microns per level-0 pixel.
    dab_bins : as ``tissue_region_stats``.

    Returns
    -------
    list of dicts: ``name``, ``area_mm2`` (the polygon's), ``tissue_area_mm2``, the ``class_summary`` keys and
    ``ihc`` with ``dab_bins``. A nucleus inside two overlapping annotations counts in both.
    """
    centroids = np.asarray(centroids_level0, float).reshape(-1, 2)
    stats = []
    for annotation in annotations:
        tissue_px = float(
            (tissue.mask & polygon_mask(annotation.polygon, tissue.mask.shape, origin_xy, tissue.level0_per_px)).sum()
        )
        tissue_mm2 = area_px_to_mm2(tissue_px, tissue.mpp)
        inside = shapely.contains_xy(annotation.polygon, centroids[:, 0], centroids[:, 1])
        entry = {
            "name": annotation.name,
            "area_mm2": round(area_px_to_mm2(annotation.polygon.area, slide_mpp), 5),
            "tissue_area_mm2": round(tissue_mm2, 5),
            **class_summary(class_ids[inside], class_names, tissue_mm2),
        }
        if dab_bins is not None:
            entry["ihc"] = positivity_summary(dab_bins[inside])
        stats.append(entry)
    return stats


def positivity_hotspot(
    centroids_level0: np.ndarray,
    positive: np.ndarray,
    slide_mpp: float,
    origin_xy: tuple[float, float],
    field_um: float = 450.0,
    min_nuclei: int = 500,
    steps_per_field: int = 4,
) -> dict | None:
    """The hotspot of a positivity index (Ki-67): the square field of ``field_um`` holding at least ``min_nuclei``
    nuclei with the highest share of positive ones, fields laid every ``field_um / steps_per_field``.

    Parameters
    ----------
    centroids_level0 : (N, 2) centroids (x, y) in level-0 pixels; positive : (N,) bool.
    slide_mpp : microns per level-0 pixel; origin_xy : level-0 corner the fields are laid from.

    Returns
    -------
    dict with ``field_um``, ``bbox_level0``, ``n_nuclei``, ``positive``, ``positive_percent`` and
    ``positive_percent_ci95``, or None where no field holds ``min_nuclei`` nuclei.
    """
    xy = np.asarray(centroids_level0, float).reshape(-1, 2)
    if len(xy) < min_nuclei:
        return None
    step_px = field_um / slide_mpp / steps_per_field
    cells = np.floor((xy - origin_xy) / step_px).astype(np.int64)
    first_cell = cells.min(axis=0)
    cells -= first_cell
    shape = tuple(cells.max(axis=0)[::-1] + 1)  # (rows, cols) of steps
    counts = np.zeros(shape)
    positives = np.zeros(shape)
    np.add.at(counts, (cells[:, 1], cells[:, 0]), 1)
    np.add.at(positives, (cells[:, 1], cells[:, 0]), np.asarray(positive, float))
    # Sums over every field of steps_per_field x steps_per_field steps (fields may run past the nuclei's extent).
    field_counts = _field_sums(counts, steps_per_field)
    field_positives = _field_sums(positives, steps_per_field)
    share = np.where(field_counts >= min_nuclei, field_positives / np.maximum(field_counts, 1), -1.0)
    if share.max() < 0:
        return None
    row, col = np.unravel_index(np.lexsort((field_positives.ravel(), share.ravel()))[-1], share.shape)
    top_left = (first_cell + (col, row) - (steps_per_field - 1)) * step_px
    x, y = top_left + origin_xy
    total, hits = int(field_counts[row, col]), int(field_positives[row, col])
    side = field_um / slide_mpp
    return {
        "field_um": field_um,
        "bbox_level0": [round(x), round(y), round(side), round(side)],
        "n_nuclei": total,
        "positive": hits,
        "positive_percent": 100 * hits / total,
        "positive_percent_ci95": index_confidence_interval(hits, total),
    }


def _field_sums(grid: np.ndarray, size: int) -> np.ndarray:
    """Sums of ``grid`` over every size x size window that overlaps it (zero padding): (h + size - 1, w + size - 1);
    entry (r, c) is the window whose bottom-right cell is (r, c) of the grid (so its top-left is r - size + 1)."""
    padded = np.pad(grid, size - 1)
    cumulative = np.pad(padded.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return cumulative[size:, size:] - cumulative[:-size, size:] - cumulative[size:, :-size] + cumulative[:-size, :-size]


def review_squares(
    centroids_level0: np.ndarray,
    confidence: np.ndarray,
    slide_mpp: float,
    origin_xy: tuple[float, float],
    square_um: float = 128.0,
    min_nuclei: int = 10,
    low_confidence: float = 0.5,
    top: int = 10,
) -> dict:
    """Grid squares ranked for review: lowest mean nucleus confidence first, and the densest square.

    Parameters
    ----------
    centroids_level0 : (N, 2) centroids (x, y) in level-0 pixels.
    confidence : (N,) per-nucleus confidence in [0, 1] (detection probability x class probability).
    slide_mpp : microns per level-0 pixel.
    square_um : side of a grid square; squares with fewer than ``min_nuclei`` nuclei are not ranked.

    Returns
    -------
    dict: ``square_um``, ``low_confidence_threshold``, ``squares`` (up to ``top`` dicts with ``bbox_level0``,
    ``nuclei``, ``mean_confidence``, ``low_confidence_percent``), ``densest`` (the same fields for the square with
    the most nuclei, or None).
    """
    side_px = square_um / slide_mpp
    xy = np.asarray(centroids_level0, float).reshape(-1, 2)
    result = {"square_um": square_um, "low_confidence_threshold": low_confidence, "squares": [], "densest": None}
    if len(xy) == 0:
        return result
    cells = np.floor((xy - origin_xy) / side_px).astype(np.int64)
    keys, index, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    index = index.ravel()
    mean_confidence = np.bincount(index, weights=confidence) / counts
    low_percent = 100 * np.bincount(index, weights=(confidence < low_confidence).astype(float)) / counts

    def square(k: int) -> dict:
        """Square ``k``'s box, nucleus count and confidence figures."""
        x, y = origin_xy[0] + keys[k, 0] * side_px, origin_xy[1] + keys[k, 1] * side_px
        return {
            "bbox_level0": [round(x), round(y), round(side_px), round(side_px)],
            "nuclei": int(counts[k]),
            "mean_confidence": round(float(mean_confidence[k]), 4),
            "low_confidence_percent": round(float(low_percent[k]), 2),
        }

    ranked = [k for k in np.argsort(mean_confidence, kind="stable") if counts[k] >= min_nuclei][:top]
    result["squares"] = [square(k) for k in ranked]
    result["densest"] = square(int(np.argmax(counts)))
    return result

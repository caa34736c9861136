"""Positivity bins, H-score, Allred scores, counts and densities."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import binomtest

DAB_BIN_NAMES = ("Negative", "1+", "2+", "3+")
DAB_BIN_COLORS = ([112, 112, 225], [255, 215, 0], [255, 128, 0], [200, 0, 0])


def dab_bins(dab_od_mean: np.ndarray, thresholds: Sequence[float] = (0.2, 0.4, 0.6)) -> np.ndarray:
    """(N,) intensity bin 0 (negative), 1, 2, 3 of each nucleus by its DAB OD mean (QuPath's rule)."""
    return np.searchsorted(np.asarray(thresholds), dab_od_mean, side="right")


def positivity_certainty(dab_od_mean: np.ndarray, threshold: float, margin_od: float = 0.1) -> np.ndarray:
    """(N,) in [0, 1]: how far each nucleus's DAB OD mean is from the positivity threshold, 1 at ``margin_od`` or
    more. Borderline nuclei (0 at the threshold) are the calls a pathologist should check first."""
    return np.clip(np.abs(np.asarray(dab_od_mean, float) - threshold) / margin_od, 0, 1)


def allred_proportion_score(positive_fraction: float) -> int:
    """Allred proportion score 0-5 (0: none, 1: <1%, 2: 1-10%, 3: 10-33%, 4: 33-66%, 5: >66%)."""
    if positive_fraction <= 0:
        return 0
    return 1 + int(np.searchsorted([0.01, 0.10, 1 / 3, 2 / 3], positive_fraction, side="right"))


def index_confidence_interval(positive: int, total: int, level: float = 0.95) -> list[float]:
    """Wilson score interval of a positivity index (e.g. Ki-67: positive / all nuclei), in percent."""
    if total == 0:
        return [0.0, 100.0]
    interval = binomtest(positive, total).proportion_ci(level, method="wilson")
    return [100 * interval.low, 100 * interval.high]


def index_range_of_uncertain(positive: np.ndarray, borderline: np.ndarray, unsure: np.ndarray) -> list[float]:
    """Positive % with the uncertain nuclei counted both ways: the lowest index with every borderline call negative
    and every unsure detection called positive left out (not a nucleus), the highest with every borderline call
    positive and every unsure detection called negative left out. Beside the Wilson interval (sampling), how far the
    index could move on the calls a pathologist would check.

    Parameters
    ----------
    positive, borderline, unsure : (N,) bool: called positive; positivity call borderline; detection unsure.

    Returns
    -------
    [low, high] in percent ([0, 100] without nuclei).
    """
    sure_positive_removed = unsure & positive & ~borderline
    low_kept = ~sure_positive_removed
    low_positive = positive & ~borderline & low_kept
    high_positive = positive | borderline
    high_kept = ~(unsure & ~high_positive)
    if not low_kept.any() or not high_kept.any():
        return [0.0, 100.0]
    return [100 * low_positive.sum() / low_kept.sum(), 100 * (high_positive & high_kept).sum() / high_kept.sum()]


def positivity_summary(bins: np.ndarray) -> dict:
    """Counts per bin, positive % (the labelling index, e.g. Ki-67) with its 95% Wilson interval, H-score (0-300)
    and Allred scores of one slide or region."""
    counts = np.bincount(bins, minlength=4)[:4]
    total = int(counts.sum())
    positive = int(counts[1:].sum())
    fraction = positive / total if total else 0.0
    intensity = int(round((counts[1:] * np.arange(1, 4)).sum() / positive)) if positive else 0
    proportion = allred_proportion_score(fraction)
    return {
        "counts": {name: int(c) for name, c in zip(DAB_BIN_NAMES, counts)},
        "n_nuclei": total,
        "positive_percent": 100 * fraction,
        "positive_percent_ci95": index_confidence_interval(positive, total),
        "h_score": float((counts * np.arange(4)).sum() / total * 100) if total else 0.0,
        "allred_proportion_score": proportion,
        "allred_intensity_score": intensity,
        "allred_total_score": proportion + intensity if positive else 0,
    }


def class_summary(class_ids: np.ndarray, class_names: list[str], tissue_area_mm2: float) -> dict:
    """Per-class counts, densities per mm² of tissue, and fractions (class 0 = background is skipped)."""
    counts = np.bincount(class_ids.astype(int), minlength=len(class_names))
    total = int(counts[1:].sum())
    per_class = {}
    for class_id, name in enumerate(class_names):
        if class_id == 0:
            continue
        per_class[name] = {
            "count": int(counts[class_id]),
            "density_per_mm2": counts[class_id] / tissue_area_mm2 if tissue_area_mm2 > 0 else 0.0,
            "fraction": counts[class_id] / total if total else 0.0,
        }
    return {
        "n_nuclei": total,
        "density_per_mm2": total / tissue_area_mm2 if tissue_area_mm2 > 0 else 0.0,
        "classes": per_class,
    }

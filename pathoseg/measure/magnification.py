"""Does the slide's declared pixel size fit its nuclei? Scanners write wrong or no µm/px often enough (a 20x scan
labelled 40x, an export that lost its metadata), and every size, density and the model's own view of the nuclei
depend on it.

Each class's median nucleus area is compared with the model's median for that class on its training images at
their true pixel size (``REFERENCE_AREA_UM2``; per class, so that a slide of small stromal nuclei is not taken for
a coarse scan), and the ratios are averaged in log space, weighted by the nuclei behind each. The model's outlines
do not scale with the image as a ruler would: resampling an image by ``k`` moves the areas it finds by about ``k``,
not ``k²`` (``benchmarks/bench_mpp_check.py``: log-slope 0.50-0.56 of the ideal for 0.7x and 1.4x on 60 real
images), so the area ratio itself, not its square root, estimates the pixel-size ratio.

How far it can be trusted: the median nucleus differs between tissues and patients (a high-grade tumour's nuclei
are twice a lymphocyte's), so on images at their true pixel size the estimate spreads over about 0.6-1.9x of the
truth (see the benchmark). The warning is therefore kept for a factor (``tiling.mpp_check_factor``) beyond that
spread; the estimate itself is always reported.
"""

from __future__ import annotations

import numpy as np

# The model's median nucleus area per class (µm²) on its training images at their true pixel size: the median of the
# per-image medians over MoNuSeg, CoNSeP (per source image), NuCLS and DeepLIIF, images holding >= 20 of that class
# (benchmarks/bench_mpp_check.py prints them again). Models not listed use pathoseg-light's.
REFERENCE_AREA_UM2 = {
    "pathoseg-light": {"inflammatory": 17.5, "epithelial": 31.6, "spindle": 16.8},
    "pathoseg-fast": {"inflammatory": 17.8, "epithelial": 36.1, "spindle": 18.2},
}
MIN_CLASS_NUCLEI = 20  # a class with fewer nuclei gives no ratio of its own
MIN_NUCLEI = 100  # fewer nuclei in the classes used say too little about a slide's scale: no estimate


def reference_areas(model_name: str) -> dict[str, float]:
    """Per class, the model's median nucleus area (µm²) at the true pixel size."""
    return REFERENCE_AREA_UM2.get(model_name, REFERENCE_AREA_UM2["pathoseg-light"])


def area_ratio(area_um2: np.ndarray, class_names: np.ndarray, reference_um2: dict[str, float]) -> tuple[float, int]:
    """Reference over observed median area, per class, averaged in log space weighted by each class's nuclei.

    Parameters
    ----------
    area_um2 : (N,) nucleus areas in µm² at the declared pixel size.
    class_names : (N,) each nucleus's class name.
    reference_um2 : per class name, the reference median area.

    Returns
    -------
    The ratio (NaN with fewer than ``MIN_NUCLEI`` nuclei in classes of ``MIN_CLASS_NUCLEI`` or more), and the
    number of nuclei it rests on.
    """
    logs, weights = [], []
    for name, reference in reference_um2.items():
        areas = area_um2[(class_names == name) & np.isfinite(area_um2)]
        if len(areas) >= MIN_CLASS_NUCLEI:
            logs.append(np.log(reference / np.median(areas)))
            weights.append(len(areas))
    if sum(weights) < MIN_NUCLEI:
        return float("nan"), int(sum(weights))
    return float(np.exp(np.average(logs, weights=weights))), int(sum(weights))


def beyond_factor(ratio: float, factor: float) -> bool:
    """Whether an estimated / declared pixel-size ``ratio`` is more than ``factor`` above or below 1 (False for
    NaN)."""
    return bool(abs(np.log(ratio)) > np.log(factor))


def mpp_check(
    area_um2: np.ndarray, class_names: np.ndarray, declared_mpp: float, model_name: str, factor: float
) -> dict:
    """The magnification check of a slide.

    Parameters
    ----------
    area_um2, class_names : (N,) the slide's nuclei: area in µm² at ``declared_mpp`` and class name.
    declared_mpp : the slide's pixel size as read (or given with ``--mpp``).
    model_name : whose reference areas to use (``reference_areas``).
    factor : warn when the estimate is more than this factor above or below ``declared_mpp``.

    Returns
    -------
    dict: ``declared_mpp``, ``estimated_mpp`` (None with too few nuclei), ``ratio`` (estimated / declared),
    ``nuclei`` it rests on, ``factor``, and ``warning``: one line, or None.
    """
    ratio, nuclei = area_ratio(np.asarray(area_um2, float), np.asarray(class_names), reference_areas(model_name))
    known = bool(np.isfinite(ratio))
    facts: dict = {
        "declared_mpp": declared_mpp,
        "estimated_mpp": round(declared_mpp * ratio, 4) if known else None,
        "ratio": round(ratio, 3) if known else None,
        "nuclei": nuclei,
        "factor": factor,
        "warning": None,
    }
    if known and beyond_factor(ratio, factor):
        facts["warning"] = (
            f"the nuclei look like a scan at about {declared_mpp * ratio:.2f} µm/px, not the declared "
            f"{declared_mpp:.3g} µm/px ({ratio:.1f}x; {nuclei} nuclei): check the scanner's pixel size, or give "
            f"the right one with --mpp"
        )
    return facts

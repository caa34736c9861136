"""Per-nucleus measurements: shape (µm), stain optical densities, class, confidence."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.measure import regionprops_table

from pathoseg.measure.stain import stain_od
from pathoseg.models.postproc import class_distributions, majority_classes

# Internal key -> QuPath measurement name (units in the name, as QuPath writes them).
MEASUREMENT_NAMES = {
    "area_um2": "Nucleus: Area µm^2",
    "perimeter_um": "Nucleus: Perimeter µm",
    "circularity": "Nucleus: Circularity",
    "solidity": "Nucleus: Solidity",
    "eccentricity": "Nucleus: Eccentricity",
    "major_axis_um": "Nucleus: Major axis µm",
    "minor_axis_um": "Nucleus: Minor axis µm",
    "hematoxylin_od_mean": "Nucleus: Hematoxylin OD mean",
    "eosin_od_mean": "Nucleus: Eosin OD mean",
    "dab_od_mean": "Nucleus: DAB OD mean",
    "dab_od_max": "Nucleus: DAB OD max",
    "detection_probability": "Detection probability",
    "class_probability": "Class probability",
    "class_entropy": "Class entropy",
}


def measure_nuclei(labels: np.ndarray, rgb: np.ndarray, np_prob: np.ndarray, nc_prob: np.ndarray, mpp: float,
                   stain_matrix: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Measurements of instances 1..N (every label present).

    Parameters
    ----------
    labels : (H, W) int, instances 1..N, all present.
    rgb : (H, W, 3) uint8.
    np_prob : (H, W) nucleus probability.
    nc_prob : (C, H, W) class probabilities (class 0 background).
    mpp : microns per pixel of these arrays.

    Returns
    -------
    dict of (N,) arrays: the keys of MEASUREMENT_NAMES plus ``class_id`` (int, 1..C-1).
    """
    n = int(labels.max())
    if n == 0:
        return {key: np.zeros(0) for key in [*MEASUREMENT_NAMES, "class_id"]}
    table = regionprops_table(labels, properties=("label", "area", "perimeter", "solidity", "eccentricity",
                                                  "axis_major_length", "axis_minor_length"))
    area_px, perimeter_px = table["area"].astype(float), table["perimeter"]
    order = table["label"] - 1
    # Stain and probability statistics over the labelled pixels only (a fraction of the window).
    inside = labels > 0
    pixel_labels = labels[inside]
    index = np.arange(1, n + 1)
    od = stain_od(rgb[inside], stain_matrix)  # (K, 3)
    od_mean = np.stack([ndimage.mean(od[:, c], pixel_labels, index) for c in range(3)], axis=1)
    dab_max = ndimage.maximum(od[:, 2], pixel_labels, index)
    detection_probability = ndimage.mean(np_prob[inside], pixel_labels, index)
    classes = majority_classes(labels, nc_prob)  # HoVer-Net's vote
    distributions = class_distributions(labels, nc_prob)
    class_probability = distributions[np.arange(n), classes].astype(np.float32)
    foreground = distributions[order][:, 1:]
    normalised = foreground / np.maximum(foreground.sum(axis=1, keepdims=True), 1e-9)
    entropy = -(normalised * np.log(np.clip(normalised, 1e-9, 1))).sum(axis=1) / np.log(max(2, foreground.shape[1]))
    return {
        "area_um2": area_px * mpp * mpp,
        "perimeter_um": perimeter_px * mpp,
        "circularity": np.clip(4 * np.pi * area_px / np.maximum(perimeter_px, 1e-9) ** 2, 0, 1),
        "solidity": table["solidity"],
        "eccentricity": table["eccentricity"],
        "major_axis_um": table["axis_major_length"] * mpp,
        "minor_axis_um": table["axis_minor_length"] * mpp,
        "hematoxylin_od_mean": od_mean[order, 0],
        "eosin_od_mean": od_mean[order, 1],
        "dab_od_mean": od_mean[order, 2],
        "dab_od_max": np.asarray(dab_max)[order],
        "detection_probability": np.asarray(detection_probability)[order],
        "class_probability": class_probability[order],
        "class_entropy": entropy,
        "class_id": classes[order],
    }


def plausible(measurements: dict[str, np.ndarray], min_area_um2: float, max_area_um2: float,
              min_solidity: float) -> dict[str, np.ndarray]:
    """Boolean masks of the plausibility filters: ``too_small``, ``too_large``, ``irregular``, and ``keep``."""
    too_small = measurements["area_um2"] < min_area_um2
    too_large = measurements["area_um2"] > max_area_um2
    irregular = measurements["solidity"] < min_solidity
    return {"too_small": too_small, "too_large": too_large, "irregular": irregular & ~too_small & ~too_large,
            "keep": ~(too_small | too_large | irregular)}

"""Per-nucleus measurements: shape (µm), stain optical densities, class, confidence."""

from __future__ import annotations

import numpy as np
import shapely
from scipy import ndimage
from shapely.geometry import Polygon
from skimage.segmentation import expand_labels

from pathoseg.config import FilterConfig
from pathoseg.measure.stain import stain_od
from pathoseg.models.postproc import class_distributions, majority_classes
from pathoseg.optics import optical_density

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


def measure_nuclei(
    labels: np.ndarray,
    outlines: list[Polygon | None],
    rgb: np.ndarray,
    np_prob: np.ndarray,
    nc_prob: np.ndarray,
    mpp: float,
    stain_matrix: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Measurements of instances 1..N (every label present), computed for all of them at once.

    Parameters
    ----------
    labels : (H, W) int, instances 1..N, all present.
    outlines : N outlines of instances 1..N (None where an instance has no valid outline).
    rgb : (H, W, 3) uint8.
    np_prob : (H, W) nucleus probability.
    nc_prob : (C, H, W) class probabilities (class 0 background).
    mpp : microns per pixel of these arrays.

    Returns
    -------
    dict of (N,) arrays: the keys of MEASUREMENT_NAMES plus ``class_id`` (int, 1..C-1). Area, perimeter, axes and
    eccentricity are those of the pixels (as scikit-image's regionprops gives them); solidity is the outline's, as
    QuPath measures it on a detection's polygon (NaN without an outline).
    """
    n = int(labels.max())
    if n == 0:
        return {key: np.zeros(0) for key in [*MEASUREMENT_NAMES, "class_id"]}
    inside = labels > 0
    pixel_index = np.flatnonzero(inside)  # (K,) flat positions of the nucleus pixels, in raster order
    pixel_labels = labels.ravel()[pixel_index]
    area_px = np.bincount(pixel_labels, minlength=n + 1)[1:].astype(float)
    perimeter_px = pixel_perimeters(labels, n)
    major_px, minor_px, eccentricity = ellipse_axes(*np.divmod(pixel_index, labels.shape[1]), pixel_labels, n)
    index = np.arange(1, n + 1)
    od = stain_od(rgb[inside], stain_matrix)  # (K, 3)
    od_mean = np.stack([ndimage.mean(od[:, c], pixel_labels, index) for c in range(3)], axis=1)
    pixel_probs = nc_prob.reshape(nc_prob.shape[0], -1)[:, pixel_index]  # (C, K), one gather
    classes = majority_classes(pixel_labels, pixel_probs, n)  # HoVer-Net's vote
    distributions = class_distributions(pixel_labels, pixel_probs, n)
    foreground = distributions[:, 1:]
    normalised = foreground / np.maximum(foreground.sum(axis=1, keepdims=True), 1e-9)
    entropy = -(normalised * np.log(np.clip(normalised, 1e-9, 1))).sum(axis=1) / np.log(max(2, foreground.shape[1]))
    return {
        "area_um2": area_px * mpp * mpp,
        "perimeter_um": perimeter_px * mpp,
        "circularity": np.clip(4 * np.pi * area_px / np.maximum(perimeter_px, 1e-9) ** 2, 0, 1),
        "solidity": outline_solidity(outlines),
        "eccentricity": eccentricity,
        "major_axis_um": major_px * mpp,
        "minor_axis_um": minor_px * mpp,
        "hematoxylin_od_mean": od_mean[:, 0],
        "eosin_od_mean": od_mean[:, 1],
        "dab_od_mean": od_mean[:, 2],
        "dab_od_max": label_maxima(od[:, 2], pixel_labels, n),
        "detection_probability": np.asarray(ndimage.mean(np_prob[inside], pixel_labels, index)),
        "class_probability": distributions[np.arange(n), classes].astype(np.float32),
        "class_entropy": entropy,
        "class_id": classes,
    }


def ellipse_axes(
    rows: np.ndarray, cols: np.ndarray, pixel_labels: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N,) major and minor axis lengths (px) and eccentricity of the ellipse with the same second moments as
    each instance 1..N's pixels (regionprops' definitions), from the (K,) row, column and instance of every
    nucleus pixel."""
    count = np.bincount(pixel_labels, minlength=n + 1)[1:]
    mean_row = np.bincount(pixel_labels, rows, n + 1)[1:] / count
    mean_col = np.bincount(pixel_labels, cols, n + 1)[1:] / count
    d_row, d_col = rows - mean_row[pixel_labels - 1], cols - mean_col[pixel_labels - 1]
    var_row, covariance, var_col = (
        np.bincount(pixel_labels, product, n + 1)[1:] / count
        for product in (d_row * d_row, d_row * d_col, d_col * d_col)
    )
    half_trace = (var_row + var_col) / 2
    spread = np.sqrt(((var_row - var_col) / 2) ** 2 + covariance**2)
    largest, smallest = half_trace + spread, np.maximum(half_trace - spread, 0)
    ratio = np.divide(smallest, largest, out=np.ones_like(largest), where=largest > 0)
    return 4 * np.sqrt(largest), 4 * np.sqrt(smallest), np.sqrt(1 - ratio)


# Neighbour offsets (row, col) and their code weights in regionprops' perimeter estimate (4-connected boundary).
_NEIGHBOURS = [(-1, 0, 2), (1, 0, 2), (0, -1, 2), (0, 1, 2), (-1, -1, 10), (-1, 1, 10), (1, -1, 10), (1, 1, 10)]
_PERIMETER_WEIGHTS = np.zeros(50)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1
_PERIMETER_WEIGHTS[[21, 33]] = np.sqrt(2)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + np.sqrt(2)) / 2


def label_maxima(values: np.ndarray, pixel_labels: np.ndarray, n: int) -> np.ndarray:
    """(N,) the largest of the (K,) ``values`` of each instance 1..N's pixels (``pixel_labels``, (K,) in 1..N);
    ``ndimage.maximum``'s values, without its sort (40x faster on a region)."""
    maxima = np.full(n + 1, -np.inf, values.dtype)
    np.maximum.at(maxima, pixel_labels, values)
    return maxima[1:]


def pixel_perimeters(labels: np.ndarray, n: int) -> np.ndarray:
    """(N,) perimeter (px) of each instance 1..N as scikit-image's ``perimeter`` (4-connectivity) estimates it: its
    boundary pixels weighted by how their neighbours on the same boundary lie.

    Computed on the nucleus pixels only, as flat positions in the label map padded by one pixel (so every neighbour
    exists): on a region most pixels are background.
    """
    padded = np.pad(labels, 1).ravel()
    row_px = labels.shape[1] + 2
    offsets = {(row, col): row * row_px + col for row, col, _ in _NEIGHBOURS}
    inside = np.flatnonzero(padded)
    inside_labels = padded[inside]
    on_boundary = np.zeros(inside.size, bool)
    for row, col, _ in _NEIGHBOURS[:4]:
        on_boundary |= padded[inside + offsets[row, col]] != inside_labels
    boundary, boundary_labels = inside[on_boundary], inside_labels[on_boundary]
    is_boundary = np.zeros(padded.size, bool)
    is_boundary[boundary] = True
    code = np.ones(boundary.size, np.uint8)
    for row, col, weight in _NEIGHBOURS:
        neighbour = boundary + offsets[row, col]
        code += np.uint8(weight) * (is_boundary[neighbour] & (padded[neighbour] == boundary_labels))
    return np.bincount(boundary_labels, _PERIMETER_WEIGHTS[code], n + 1)[1:]


def outline_solidity(outlines: list[Polygon | None]) -> np.ndarray:
    """(N,) area of each outline over that of its convex hull; NaN for a missing outline."""
    shapes = np.empty(len(outlines), dtype=object)
    shapes[:] = [Polygon() if outline is None else outline for outline in outlines]
    hull_area = shapely.area(shapely.convex_hull(shapes))
    return np.divide(shapely.area(shapes), hull_area, out=np.full(len(shapes), np.nan), where=hull_area > 0)


def plausible(measurements: dict[str, np.ndarray], filters: FilterConfig) -> dict[str, np.ndarray]:
    """Boolean masks of the plausibility filters: ``too_small``, ``too_large``, ``irregular``, ``degenerate`` (no
    valid outline: NaN solidity), and ``keep``."""
    too_small = measurements["area_um2"] < filters.min_area_um2
    too_large = measurements["area_um2"] > filters.max_area_um2
    sized = ~too_small & ~too_large
    irregular = measurements["solidity"] < filters.min_solidity
    degenerate = np.isnan(measurements["solidity"])
    return {
        "too_small": too_small,
        "too_large": too_large,
        "irregular": irregular & sized,
        "degenerate": degenerate & sized,
        "keep": sized & ~irregular & ~degenerate,
    }


def contrast_od(rgb: np.ndarray, labels: np.ndarray, mpp: float) -> np.ndarray:
    """How much each instance 1..N stands out from what surrounds it: the mean optical density (summed over the three
    channels, so hematoxylin and DAB both count) of its pixels minus the median over a ring from 0.5 to 1.5 µm
    outside it (pixels of other instances left out; each ring pixel belongs to its nearest instance).

    Parameters
    ----------
    rgb : (H, W, 3) uint8.
    labels : (H, W) int, instances 1..N.
    mpp : microns per pixel.

    Returns
    -------
    (N,) float: OD units; NaN for an absent instance or one with no free pixel around it.
    """
    n = int(labels.max())
    index = np.arange(1, n + 1)
    od = optical_density(rgb).sum(axis=2)
    ring = expand_labels(labels, 1.5 / mpp)
    ring[expand_labels(labels, 0.5 / mpp) > 0] = 0
    with np.errstate(invalid="ignore", divide="ignore"):
        inside = np.asarray(ndimage.mean(od, labels, index), float)
    around = np.asarray(ndimage.median(od, ring, index), float)
    return inside - around

"""HoVer-Net post-processing: prediction maps -> nucleus instances with a class and a probability.

Unlike HoVer-Net's reference code there is no min-max normalisation over the tile: every step is local (fixed
scales, bounded-size hole filling), so post-processing a region gives the same nuclei as post-processing the whole
image wherever the region's margin is wider than a nucleus's neighbourhood. That is what makes tiling exact.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import remove_small_holes, remove_small_objects
from skimage.segmentation import watershed

from pathoseg.config import PostprocConfig


def boundary_energy(hv: np.ndarray, params: PostprocConfig) -> np.ndarray:
    """(H, W) energy in [0, 1]: high where the HV maps fall steeply (between and around nuclei).

    Each map is Gaussian-smoothed, then Sobel-differentiated along its own axis; the two steps are applied as one
    kernel per axis (the Gaussian convolved with Sobel's derivative, and with its smoothing), which gives the
    same values in half the passes over the image.

    Parameters
    ----------
    hv : (2, H, W) float, channel 0 horizontal, channel 1 vertical, in [-1, 1].
    """
    derivative, smoothing = smoothed_sobel_kernels(params.hv_smooth_sigma_px)
    slopes = []
    for axis, channel in ((1, hv[0]), (0, hv[1])):  # horizontal map: slope along x; vertical: along y
        slope = ndimage.correlate1d(channel.astype(np.float32, copy=False), derivative, axis=axis)
        slope = ndimage.correlate1d(slope, smoothing, axis=1 - axis)  # 8x the per-pixel slope
        slopes.append(np.multiply(slope, -1 / (8 * params.gradient_scale), out=slope))
    energy = np.maximum(slopes[0], slopes[1], out=slopes[0])
    return np.clip(energy, 0, 1, out=energy)


def smoothed_sobel_kernels(sigma_px: float) -> tuple[np.ndarray, np.ndarray]:
    """1-D kernels of Sobel's derivative and smoothing, each convolved with the Gaussian of ``sigma_px`` that
    ``scipy.ndimage.gaussian_filter`` uses (truncated at 4 sigma)."""
    radius = int(4 * sigma_px + 0.5)
    offsets = np.arange(-radius, radius + 1)
    gaussian = np.exp(-0.5 * (offsets / sigma_px) ** 2)
    gaussian /= gaussian.sum()
    return np.convolve(gaussian, [-1, 0, 1]), np.convolve(gaussian, [1, 2, 1])


def instances_from_maps(
    np_prob: np.ndarray, hv: np.ndarray, params: PostprocConfig | None = None, interior_prob: np.ndarray | None = None
) -> np.ndarray:
    """Watershed of the HV boundary energy from markers inside the nuclear-pixel mask.

    Parameters
    ----------
    np_prob : (H, W) float, probability of nucleus.
    hv : (2, H, W) float, HV maps in [-1, 1].
    params : post-processing settings (the configuration's defaults when None).
    interior_prob : (H, W) float, probability of a nucleus's interior (three-class head), or None. With
        ``params.interior_threshold`` > 0, markers are where the HV energy is low *and* the interior is likely,
        which splits touching nuclei the HV maps blur but loses thin nuclei whose interior band is too narrow.

    Returns
    -------
    (H, W) int32 instance labels, 0 = background, labels 1..N in raster order of their first pixel.
    """
    params = params or PostprocConfig()
    foreground = remove_small_objects(np_prob >= params.np_threshold, max_size=params.min_object_px - 1)
    energy = boundary_energy(hv, params) * foreground
    markers = foreground & (energy < params.marker_threshold)
    if interior_prob is not None and params.interior_threshold > 0:
        markers &= interior_prob >= params.interior_threshold
    markers = remove_small_holes(markers, max_size=params.max_hole_px)
    # The opening by disk(2) (the L1 ball of radius 2): two erosions, then two dilations, by the 3x3 cross
    markers = dilated_by_cross(dilated_by_cross(eroded_by_cross(eroded_by_cross(markers))))
    marker_labels = without_small_labels(ndimage.label(markers)[0], params.min_marker_px)
    landscape = -ndimage.gaussian_filter((1 - energy) * foreground, 1.0)
    return relabel_in_raster_order(flooded(landscape, marker_labels, foreground))


def flooded(landscape: np.ndarray, marker_labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """scikit-image's watershed of ``landscape`` from ``marker_labels`` within ``mask`` (all (H, W)), with the
    markers' interior pixels (all four neighbours in the same marker) set aside: the flood never leaves them, so
    they keep their label, but scikit-image would queue every one of them (on dense tissue 40% of the time).

    The same instances wherever the landscape's values are distinct; on a plateau scikit-image breaks ties by its
    queue's order, which a smaller queue may change (as any other window would).
    """
    interior = eroded_by_cross(marker_labels > 0) & mask  # four-connected marker pixels share a label
    instances = watershed(landscape, np.where(interior, 0, marker_labels), mask=mask & ~interior)
    instances[interior] = marker_labels[interior]
    return instances


def eroded_by_cross(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: ``mask`` eroded by the 3x3 cross, outside the image counting as False (scipy's
    ``binary_erosion``'s pixels, without its per-element cost)."""
    eroded = mask.copy()
    eroded[1:] &= mask[:-1]
    eroded[:-1] &= mask[1:]
    eroded[:, 1:] &= mask[:, :-1]
    eroded[:, :-1] &= mask[:, 1:]
    eroded[[0, -1]] = False
    eroded[:, [0, -1]] = False
    return eroded


def dilated_by_cross(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool: ``mask`` dilated by the 3x3 cross (scipy's ``binary_dilation``'s pixels)."""
    dilated = mask.copy()
    dilated[1:] |= mask[:-1]
    dilated[:-1] |= mask[1:]
    dilated[:, 1:] |= mask[:, :-1]
    dilated[:, :-1] |= mask[:, 1:]
    return dilated


def without_small_labels(labels: np.ndarray, min_px: int) -> np.ndarray:
    """``labels`` (1..N) without those of fewer than ``min_px`` pixels, the rest renumbered 1..K in order (what
    labelling the mask again after ``remove_small_objects`` gives, with one labelling instead of two)."""
    keep = np.bincount(labels.ravel()) >= min_px
    keep[0] = False
    lookup = np.zeros(keep.size, dtype=np.int32)
    lookup[keep] = np.arange(1, keep.sum() + 1, dtype=np.int32)
    return lookup[labels]


def relabel_in_raster_order(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 1..N by the raster position of their first pixel (deterministic ids)."""
    flat = labels.ravel()
    inside = np.flatnonzero(flat)
    present, first = np.unique(flat[inside], return_index=True)
    lookup = np.zeros(int(present.max()) + 1 if present.size else 1, dtype=np.int32)
    lookup[present[np.argsort(inside[first])]] = np.arange(1, present.size + 1, dtype=np.int32)
    return lookup[labels]


def majority_classes(pixel_labels: np.ndarray, pixel_probs: np.ndarray, n: int) -> np.ndarray:
    """(N,) class in 1..C-1 of each instance 1..N: the most frequent per-pixel argmax (background excluded).

    Parameters
    ----------
    pixel_labels : (K,) int, the instance (1..N) of each nucleus pixel.
    pixel_probs : (C, K) float, those pixels' class probabilities, class 0 = background.
    n : number of instances.
    """
    n_classes = pixel_probs.shape[0]
    votes_per_pixel = pixel_probs[1:].argmax(axis=0)
    votes = np.bincount((pixel_labels - 1) * (n_classes - 1) + votes_per_pixel, minlength=n * (n_classes - 1)).reshape(
        n, n_classes - 1
    )
    return votes.argmax(axis=1) + 1


def class_distributions(pixel_labels: np.ndarray, pixel_probs: np.ndarray, n: int) -> np.ndarray:
    """(N, C) mean class probabilities over each instance 1..N (arguments as ``majority_classes``)."""
    index = pixel_labels - 1
    sums = np.stack([np.bincount(index, weights=probs, minlength=n) for probs in pixel_probs], axis=1)
    return sums / np.maximum(np.bincount(index, minlength=n), 1)[:, None]

"""Training targets generated from instance label maps: nuclear-pixel classes and HoVer-Net's HV maps."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def hv_targets(instances: np.ndarray) -> np.ndarray:
    """Horizontal and vertical distance of each nucleus pixel to its nucleus's centre of mass.

    Parameters
    ----------
    instances : (H, W) int array, 0 = background, 1..N nuclei.

    Returns
    -------
    (2, H, W) float32 array in [-1, 1]: channel 0 horizontal (x), channel 1 vertical (y). Each side of the
    centre is scaled separately so that the extreme pixel of a nucleus is exactly -1 or +1 (as in HoVer-Net).
    """
    hv = np.zeros((2, *instances.shape), dtype=np.float32)
    for label, box in enumerate(ndimage.find_objects(instances), start=1):
        if box is None:
            continue
        mask = instances[box] == label
        rows, cols = np.nonzero(mask)
        for channel, offsets in ((0, cols - cols.mean()), (1, rows - rows.mean())):
            scaled = offsets.astype(np.float32)
            negative, positive = scaled < 0, scaled > 0
            if negative.any():
                scaled[negative] /= -scaled[negative].min()
            if positive.any():
                scaled[positive] /= scaled[positive].max()
            hv[channel][box][rows, cols] = scaled
    return hv


def np_targets(instances: np.ndarray, boundary_px: int = 0) -> np.ndarray:
    """Nuclear-pixel classes: 0 background, 1 nucleus (interior), 2 boundary band.

    Parameters
    ----------
    instances : (H, W) int array, 0 = background, 1..N nuclei.
    boundary_px : width of the band inside each nucleus that borders background or another nucleus; 0 gives
        the two-class target (background / nucleus).

    Returns
    -------
    (H, W) int64 array.
    """
    nucleus = instances > 0
    if boundary_px <= 0:
        return nucleus.astype(np.int64)
    size = 2 * boundary_px + 1
    near_other_label = ndimage.maximum_filter(instances, size) != ndimage.minimum_filter(instances, size)
    return np.where(nucleus, np.where(near_other_label, 2, 1), 0).astype(np.int64)


def contact_weights(instances: np.ndarray, radius_px: int, weight: float) -> np.ndarray:
    """Pixel weights of the loss: ``weight`` on the pixels within ``radius_px`` (in x and y) of two nuclei, where
    touching or close nuclei must be told apart (both nuclei's pixels there and the background between them), 1
    elsewhere.

    Parameters
    ----------
    instances : (H, W) int array, 0 = background, 1..N nuclei.

    Returns
    -------
    (H, W) float32 array.
    """
    size = 2 * radius_px + 1
    highest = ndimage.maximum_filter(instances, size)
    lowest_nucleus = ndimage.minimum_filter(np.where(instances > 0, instances, np.iinfo(instances.dtype).max), size)
    return np.where(lowest_nucleus < highest, np.float32(weight), np.float32(1))

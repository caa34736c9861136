"""Colour deconvolution in optical-density units (log10), as QuPath measures stains."""

from __future__ import annotations

import numpy as np
from skimage.color import hed_from_rgb


def stain_od(rgb: np.ndarray, stain_matrix: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) per-stain optical density (hematoxylin, eosin, DAB by default) of (H, W, 3) uint8 RGB.

    OD = -log10((I + 1) / 256) per RGB channel, then unmixed with the inverse stain matrix (skimage's
    Ruifrok-Johnston ``hed_from_rgb`` unless ``stain_matrix``, rows = stain OD vectors, is given). Values are in the
    units of QuPath's "DAB OD mean" (0.2 / 0.4 / 0.6 thresholds), negatives clipped to 0.
    """
    od = -np.log10((rgb.astype(np.float32) + 1) / 256)
    unmix = hed_from_rgb if stain_matrix is None else np.linalg.inv(np.asarray(stain_matrix, float))
    return np.clip(od @ unmix.astype(np.float32), 0, None)

"""The one conversion of RGB to optical density (Beer-Lambert), shared by tissue detection, stain measurements and
input QC."""

from __future__ import annotations

import numpy as np


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) float32 optical density ``-log10((I + 1) / 256)`` of (..., 3) uint8 (or float 0-255) RGB: glass ~0,
    dense stain > 1; the +1 keeps black finite (at most 2.41 a channel). QuPath's convention for stain ODs."""
    return -np.log10((np.asarray(rgb, np.float32) + 1) / 256)

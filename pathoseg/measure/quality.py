"""Input quality control: does the input look like tissue the model can read?

Measured on tiles sampled over the detected tissue (``pipeline.sample_tissue_tiles``). Thresholds come from the
images of ``shared/data``: all 602 of MoNuSeg, CoNSeP, NuCLS, DSB2018, DeepLIIF and the examples, and the three
slides (also at half their resolution); none is flagged.

* **structure**: the correlation of each pixel's grey value with its right and lower neighbours. Tissue is smooth
  at the scale of a pixel: 0.865 at the lowest (a CoNSeP JPEG patch); uniform noise 0.00, noise blurred by 1 px 0.78.
  Flagged below 0.5.
* **dark**: the share of the tiles' pixels darker than 30 in every channel (black: folds, ink, an unexposed image).
  Real images: at most 0.006; flagged above 0.5.
"""

from __future__ import annotations

import numpy as np

MIN_NEIGHBOUR_CORRELATION = 0.5
DARK_RGB = 30
MAX_DARK_FRACTION = 0.5
MIN_SIDE_UM = 32.0  # a smaller image cannot hold a few whole nuclei (~7 µm) with their surroundings


def neighbour_correlation(tiles: list[np.ndarray]) -> float:
    """Correlation of grey values with the right and lower neighbours, pooled over (H, W, 3) uint8 tiles; NaN for
    flat input."""
    pairs = [(grey[:, :-1].ravel(), grey[:, 1:].ravel(), grey[:-1].ravel(), grey[1:].ravel())
             for grey in (tile.astype(np.float32).mean(axis=2) for tile in tiles)]
    left = np.concatenate([p[0] for p in pairs] + [p[2] for p in pairs])
    right = np.concatenate([p[1] for p in pairs] + [p[3] for p in pairs])
    if left.size < 2 or left.std() == 0 or right.std() == 0:
        return float("nan")
    return float(np.corrcoef(left, right)[0, 1])


def dark_fraction(tiles: list[np.ndarray]) -> float:
    """Share of the pixels of (H, W, 3) uint8 tiles darker than ``DARK_RGB`` in every channel."""
    pixels = np.concatenate([tile.reshape(-1, 3) for tile in tiles])
    return float(np.mean(pixels.max(axis=1) < DARK_RGB))


def input_quality(tiles: list[np.ndarray], darkfield: bool = False) -> dict:
    """The checks on tissue tiles: their figures, and ``warnings``, one sentence per failed check (no darkness
    check on a ``darkfield`` slide, whose background is black)."""
    correlation, dark = neighbour_correlation(tiles), (float("nan") if darkfield else dark_fraction(tiles))
    warnings = []
    if not correlation >= MIN_NEIGHBOUR_CORRELATION:
        warnings.append(f"neighbouring pixels are nearly unrelated (correlation {correlation:.2f}; tissue: above "
                        f"0.86): this looks like noise, not tissue, so the nuclei found are not to be trusted")
    if dark > MAX_DARK_FRACTION:
        warnings.append(f"{100 * dark:.0f}% of the tissue is nearly black (folds, ink or an unexposed image)")
    return {"neighbour_correlation": round(correlation, 4), "dark_fraction": round(dark, 4), "warnings": warnings}

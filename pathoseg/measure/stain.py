"""Colour deconvolution in optical-density units (log10), as QuPath measures stains."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from skimage.color import hed_from_rgb, rgb_from_hed

from pathoseg.optics import optical_density


def stain_od(rgb: np.ndarray, stain_matrix: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) per-stain optical density (hematoxylin, eosin, DAB by default) of (H, W, 3) uint8 RGB.

    OD = -log10((I + 1) / 256) per RGB channel, then unmixed with the inverse stain matrix (skimage's
    Ruifrok-Johnston ``hed_from_rgb`` unless ``stain_matrix``, rows = stain OD vectors, is given). Values are in the
    units of QuPath's "DAB OD mean" (0.2 / 0.4 / 0.6 thresholds), negatives clipped to 0.
    """
    od = optical_density(rgb)
    unmix = hed_from_rgb if stain_matrix is None else np.linalg.inv(np.asarray(stain_matrix, float))
    return np.clip(od @ unmix.astype(np.float32), 0, None)


REFERENCE_VECTORS = rgb_from_hed / np.linalg.norm(rgb_from_hed, axis=1, keepdims=True)  # rows H, E, DAB


@dataclass(frozen=True)
class StainEstimate:
    """Stain vectors for hematoxylin-DAB measurements.

    matrix : (3, 3) rows = unit OD vectors of hematoxylin, a residual (the slot eosin has in H&E), DAB.
    source : "estimated" (from the slide's own pixels) or "default" (Ruifrok-Johnston, skimage's).
    reason : why the default was kept; empty when estimated.
    """

    matrix: np.ndarray
    source: str
    reason: str = ""
    n_pixels: int = 0

    def as_dict(self) -> dict:
        """The estimate as summary.json records it."""
        return {
            "source": self.source,
            "reason": self.reason,
            "stained_pixels": self.n_pixels,
            "hematoxylin": self.matrix[0].round(4).tolist(),
            "dab": self.matrix[2].round(4).tolist(),
        }


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(a @ b, -1, 1))))


def estimate_hdab_vectors(
    rgb: np.ndarray,
    min_od: float = 0.15,
    min_pixels: int = 5000,
    percentile: float = 1.0,
    max_deviation_deg: float = 30.0,
) -> StainEstimate:
    """Hematoxylin and DAB vectors of an IHC image from its own optical densities (Macenko et al. 2009, as
    QuPath's "Estimate stain vectors" does): the plane of the two main directions of the stained pixels' OD, the
    robust extreme angles in it (``percentile`` and 100 - ``percentile``) as the two stains.

    Falls back to the default vectors (``source == "default"``, with the reason) when fewer than ``min_pixels``
    pixels are stained, or an estimate is more than ``max_deviation_deg`` from its stain's default vector, or
    the two estimates are under 10 degrees apart.

    Parameters
    ----------
    rgb : (..., 3) uint8 pixels (an image or a sample of a slide's tissue).
    """
    default = StainEstimate(REFERENCE_VECTORS, "default")
    od = optical_density(rgb.reshape(-1, 3))
    od = od[np.linalg.norm(od, axis=1) > min_od]
    if len(od) < min_pixels:
        return replace(default, reason=f"too little stain ({len(od)} pixels with OD > {min_od})", n_pixels=len(od))
    plane = np.linalg.eigh(np.cov(od.T))[1][:, [2, 1]]  # (3, 2): the two largest directions
    plane[:, 0] *= np.sign(plane[:, 0].sum())  # OD is positive: angles then stay clear of the +-pi wrap
    projected = od @ plane
    angles = np.percentile(np.arctan2(projected[:, 1], projected[:, 0]), [percentile, 100 - percentile])
    vectors = [plane @ np.array([np.cos(a), np.sin(a)]) for a in angles]
    vectors = [v * np.sign(v.sum()) / np.linalg.norm(v) for v in vectors]
    reference_h, reference_dab = REFERENCE_VECTORS[0], REFERENCE_VECTORS[2]
    if vectors[0] @ reference_h + vectors[1] @ reference_dab < vectors[1] @ reference_h + vectors[0] @ reference_dab:
        vectors.reverse()
    hematoxylin, dab = vectors
    deviations = {"hematoxylin": _angle_deg(hematoxylin, reference_h), "DAB": _angle_deg(dab, reference_dab)}
    for stain, deviation in deviations.items():
        if deviation > max_deviation_deg:
            return replace(
                default, reason=f"estimated {stain} vector {deviation:.0f} degrees from the default", n_pixels=len(od)
            )
    if _angle_deg(hematoxylin, dab) < 10:
        return replace(default, reason="hematoxylin and DAB estimates under 10 degrees apart", n_pixels=len(od))
    residual = np.cross(hematoxylin, dab)
    residual = residual * np.sign(residual.sum()) / np.linalg.norm(residual)
    return StainEstimate(np.stack([hematoxylin, residual, dab]).astype(np.float64), "estimated", n_pixels=len(od))

"""One region task: window pixels -> owned nuclei (polygons, centroids, class, measurements), all in model px.

The same function runs in-process or on a Dask worker; it returns only small results.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pathoseg.geometry import Box
from pathoseg.measure.nuclei import measure_nuclei, plausible
from pathoseg.models.infer import PredictionMaps, Predictor
from pathoseg.models.postproc import PostprocParams, instances_from_maps
from pathoseg.stitch.merge import keep_labels, owned_labels
from pathoseg.stitch.polygons import instance_polygons


@dataclass(frozen=True)
class RegionSettings:
    """What a region task needs besides its pixels."""

    mpp: float
    postproc: PostprocParams = PostprocParams()
    min_area_um2: float = 6.0
    max_area_um2: float = 500.0
    min_solidity: float = 0.7
    simplify_px: float = 0.3
    stain_matrix: tuple | None = None


@dataclass
class RegionResult:
    """Owned nuclei of one region, in model-space pixels of the whole slide.

    polygons : list of (K, 2) float arrays (x, y), closed implicitly.
    centroids : (N, 2) float (x, y).
    measurements : dict of (N,) arrays (MEASUREMENT_NAMES keys and ``class_id``).
    removed : counts of owned instances dropped by each plausibility filter.
    """

    index: int
    polygons: list[np.ndarray] = field(default_factory=list)
    centroids: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    measurements: dict[str, np.ndarray] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.polygons)


def nuclei_from_maps(index: int, rgb: np.ndarray, maps: PredictionMaps, window: Box, core: Box,
                     settings: RegionSettings) -> RegionResult:
    """Post-process a window's maps, keep the nuclei the core owns, measure and outline them."""
    labels = instances_from_maps(maps.np_prob, maps.hv, settings.postproc)
    owned = keep_labels(labels, owned_labels(labels, window, core))
    stain_matrix = None if settings.stain_matrix is None else np.asarray(settings.stain_matrix)
    measurements = measure_nuclei(owned, rgb, maps.np_prob, maps.nc_prob, settings.mpp, stain_matrix)
    filters = plausible(measurements, settings.min_area_um2, settings.max_area_um2, settings.min_solidity)
    keep = filters["keep"]
    polygons = instance_polygons(keep_labels(owned, np.nonzero(keep)[0] + 1), settings.simplify_px)
    valid = np.array([p is not None for p in polygons], bool)
    offset = np.array([window.x, window.y], float)
    kept_polygons = [np.asarray(p.exterior.coords)[:-1] + offset for p in polygons if p is not None]
    kept = {key: values[keep][valid] for key, values in measurements.items()}
    centroids = np.array([p.centroid.coords[0] for p in polygons if p is not None]).reshape(-1, 2) + offset
    removed = {name: int(filters[name].sum()) for name in ("too_small", "too_large", "irregular")}
    removed["degenerate"] = int((~valid).sum())
    return RegionResult(index, kept_polygons, centroids, kept, removed)


def segment_region(index: int, rgb: np.ndarray, window: Box, core: Box, predictor: Predictor,
                   settings: RegionSettings) -> RegionResult:
    """Model + post-processing + ownership on one region's window pixels (h, w, 3) uint8."""
    maps = predictor.predict(rgb, origin_xy=(window.x, window.y))
    return nuclei_from_maps(index, rgb, maps, window, core, settings)



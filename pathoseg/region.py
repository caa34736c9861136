"""One region task: window pixels -> owned nuclei (polygons, centroids, class, measurements), all in model px.

The same function runs in-process or on a Dask worker; it returns only small results.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import shapely

from pathoseg.config import Config, FilterConfig, PostprocConfig
from pathoseg.geometry import Box
from pathoseg.io.regions import RegionResult
from pathoseg.measure.nuclei import measure_nuclei, plausible
from pathoseg.measure.quality import region_quality
from pathoseg.models.infer import PredictionMaps, Predictor
from pathoseg.models.postproc import instances_from_maps
from pathoseg.stitch.merge import keep_labels, owned_labels
from pathoseg.stitch.polygons import instance_polygons
from pathoseg.tiling.grid import Region


@dataclass(frozen=True)
class RegionSettings:
    """What a region task needs besides its pixels."""

    mpp: float
    tile_px: int = 256  # the grid's tiles: the cells of input QC
    postproc: PostprocConfig = PostprocConfig()
    filters: FilterConfig = FilterConfig()
    simplify_px: float = 0.3
    stain_matrix: tuple | None = None
    roi_wkb: bytes | None = field(default=None, repr=False)  # region of interest, model px: nuclei outside are left out

    @classmethod
    def from_config(cls, config: Config, mpp: float) -> RegionSettings:
        """Settings of a run's configuration, for a model working at ``mpp``."""
        stain_matrix = config.stain.stain_matrix
        return cls(
            mpp=mpp,
            tile_px=config.tiling.tile_px,
            postproc=config.postproc,
            filters=config.filters,
            simplify_px=config.output.simplify_px,
            stain_matrix=None if stain_matrix is None else tuple(map(tuple, stain_matrix)),
        )

    def with_stain_matrix(self, matrix: np.ndarray) -> RegionSettings:
        """These settings measuring with ``matrix`` ((3, 3), rows = stain OD vectors)."""
        return dataclasses.replace(self, stain_matrix=tuple(map(tuple, np.asarray(matrix).tolist())))

    def with_roi(self, region_model_px: shapely.Geometry) -> RegionSettings:
        """These settings keeping only the nuclei whose centroid lies in ``region_model_px`` (model pixels)."""
        return dataclasses.replace(self, roi_wkb=shapely.to_wkb(region_model_px))

    def in_roi(self, centroids_xy: np.ndarray) -> np.ndarray:
        """(N,) bool: which (N, 2) model-pixel centroids lie in the region of interest (all, without one)."""
        if self.roi_wkb is None:
            return np.ones(len(centroids_xy), bool)
        roi = shapely.from_wkb(self.roi_wkb)
        shapely.prepare(roi)
        return shapely.contains_xy(roi, centroids_xy[:, 0], centroids_xy[:, 1])


@contextmanager
def timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Add the wall time of the ``with`` body to ``seconds[stage]``."""
    started = time.perf_counter()
    yield
    seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - started


def owned_nuclei(
    rgb: np.ndarray,
    maps: PredictionMaps,
    window: Box,
    core: Box,
    settings: RegionSettings,
    seconds: dict[str, float] | None = None,
) -> tuple[np.ndarray, list, dict, dict]:
    """The one post-processing chain (``segment``, ``evaluate`` and training validation): instances from a window's
    maps, those whose centroid the core owns, their outlines, measurements and plausibility filters.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 pixels of ``window``; maps : their prediction maps.
    window, core : model-pixel boxes; a whole image is its own window and core.

    Returns
    -------
    labels : (H, W) int32, the owned instances 1..N.
    outlines : their N outlines (``instance_polygons``).
    measurements : dict of (N,) arrays (``measure_nuclei``); filters : dict of (N,) bool masks, ``keep`` among them.
    """
    seconds = {} if seconds is None else seconds
    with timed(seconds, "postproc"):
        labels = instances_from_maps(maps.np_prob, maps.hv, settings.postproc, maps.interior_prob)
        owned = keep_labels(labels, owned_labels(labels, window, core))
    with timed(seconds, "outlines"):
        outlines = instance_polygons(owned, settings.simplify_px)
    with timed(seconds, "measure"):
        measurements, filters = plausible_nuclei(owned, outlines, rgb, maps, settings)
    return owned, outlines, measurements, filters


def nuclei_from_maps(
    index: int,
    rgb: np.ndarray,
    maps: PredictionMaps,
    window: Box,
    core: Box,
    settings: RegionSettings,
    seconds: dict[str, float] | None = None,
) -> RegionResult:
    """A region's result: its ``owned_nuclei`` that are plausible and inside the region of interest, and the input
    QC of its core's tiles."""
    seconds = {} if seconds is None else seconds
    _, outlines, measurements, filters = owned_nuclei(rgb, maps, window, core, settings, seconds)
    offset = np.array([window.x, window.y], float)
    plausible_ids = np.nonzero(filters["keep"])[0]
    centroids = np.array([outlines[i].centroid.coords[0] for i in plausible_ids]).reshape(-1, 2) + offset
    in_roi = settings.in_roi(centroids)
    keep, centroids = plausible_ids[in_roi], centroids[in_roi]
    polygons = [np.asarray(outlines[i].exterior.coords)[:-1] + offset for i in keep]
    removed = {name: int(filters[name].sum()) for name in ("too_small", "too_large", "irregular", "degenerate")}
    with timed(seconds, "quality"):
        quality = region_quality(rgb, window, core, settings.tile_px, settings.mpp)
    return RegionResult(
        index,
        polygons,
        centroids,
        {key: values[keep] for key, values in measurements.items()},
        removed,
        quality,
        seconds,
    )


def plausible_nuclei(
    labels: np.ndarray, outlines: list, rgb: np.ndarray, maps: PredictionMaps, settings: RegionSettings
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Measure instances 1..N and flag the implausible ones (too small, too large, irregular, no outline).

    Parameters
    ----------
    labels : (H, W) int, instances 1..N, all present.
    outlines : their N outlines (``instance_polygons``).
    rgb : (H, W, 3) uint8; maps : the prediction maps of the same pixels.

    Returns
    -------
    measurements : dict of (N,) arrays (see ``measure_nuclei``).
    filters : dict of (N,) bool masks (see ``plausible``), ``keep`` among them.
    """
    stain_matrix = None if settings.stain_matrix is None else np.asarray(settings.stain_matrix)
    measurements = measure_nuclei(labels, outlines, rgb, maps.np_prob, maps.nc_prob, settings.mpp, stain_matrix)
    return measurements, plausible(measurements, settings.filters)


def segment_region(
    region: Region,
    pixels: np.ndarray,
    frame: Box,
    predictor: Predictor,
    settings: RegionSettings,
    seconds: dict[str, float] | None = None,
) -> RegionResult:
    """Model + post-processing + ownership on one region; ``pixels`` (h, w, 3) uint8 are the frame's pixels in
    ``region.reads``."""
    seconds = {} if seconds is None else seconds
    window, reads = region.window, region.reads
    with timed(seconds, "inference"):
        maps = predictor.predict_window(pixels, reads, window, frame)
    rgb = pixels[window.slices_in(reads)]
    return nuclei_from_maps(region.index, rgb, maps, window, region.core, settings, seconds)

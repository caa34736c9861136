"""Per-region results on disk (``<store>/nuclei/region_<index>.npz``): what makes a run resumable.

Each file is written to a temporary name and renamed, so a file that exists was complete when written; a file
damaged since (a truncated copy, a flipped bit) fails its zip CRC-32 check when read in full (``intact_regions``).
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pathoseg.io.files import atomic_path
from pathoseg.measure.quality import TILE_METRICS

log = logging.getLogger(__name__)

REMOVED_KEYS = ("too_small", "too_large", "irregular", "degenerate")


@dataclass
class RegionResult:
    """Owned nuclei of one region, in model-space pixels of the whole slide.

    polygons : list of (K, 2) float arrays (x, y), closed implicitly.
    centroids : (N, 2) float (x, y).
    measurements : dict of (N,) arrays (MEASUREMENT_NAMES keys and ``class_id``).
    removed : counts of owned instances dropped by each plausibility filter.
    quality : (T, 2 + len(TILE_METRICS)) float32, ``measure.quality.region_quality`` of the core's tiles.
    seconds : wall time of each stage of the task (read, inference, postproc, measure, outlines).
    """

    index: int
    polygons: list[np.ndarray] = field(default_factory=list)
    centroids: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    measurements: dict[str, np.ndarray] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    quality: np.ndarray = field(default_factory=lambda: np.zeros((0, 2 + len(TILE_METRICS)), np.float32))
    seconds: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.polygons)


def region_path(folder: Path, index: int) -> Path:
    """Where region ``index``'s result is kept."""
    return Path(folder) / f"region_{index:06d}.npz"


def save_region(folder: Path, result: RegionResult) -> None:
    """Keep a region's result (polygons, centroids, measurements, QC) in one compressed file, atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(p) for p in result.polygons], np.int64)
    coords = np.concatenate(result.polygons) if result.polygons else np.zeros((0, 2))
    arrays: dict[str, Any] = {
        "coords": coords.astype(np.float64),
        "lengths": lengths,
        "centroids": result.centroids,
        "removed": np.array([result.removed.get(k, 0) for k in REMOVED_KEYS], np.int64),
        "quality": result.quality,
        **{f"m_{key}": np.asarray(values) for key, values in result.measurements.items()},
    }
    with atomic_path(region_path(folder, result.index)) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays)


def load_region(folder: Path, index: int) -> RegionResult:
    """Read back region ``index``'s result."""
    with np.load(region_path(folder, index), allow_pickle=False) as data:
        offsets = np.cumsum(data["lengths"])[:-1]
        polygons = np.split(data["coords"], offsets) if len(data["lengths"]) else []
        measurements = {key[2:]: data[key] for key in data.files if key.startswith("m_")}
        removed = dict(zip(REMOVED_KEYS, (int(v) for v in data["removed"])))
        return RegionResult(index, list(polygons), data["centroids"], measurements, removed, data["quality"])


def finished_regions(folder: Path) -> set[int]:
    """The indices of the regions whose result files exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return set()
    return {int(p.stem.split("_")[1]) for p in folder.glob("region_*.npz") if p.stem.split("_")[1].isdigit()}


def region_readable(folder: Path, index: int) -> bool:
    """Whether a region file reads in full: every array decoded and its CRC-32 checked."""
    try:
        with np.load(region_path(folder, index), allow_pickle=False) as data:
            for key in data.files:
                data[key]
        return True
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return False


def intact_regions(folder: Path) -> set[int]:
    """``finished_regions`` whose files read in full; damaged ones are deleted (so they are computed again) and
    logged."""
    intact = set()
    for index in sorted(finished_regions(folder)):
        if region_readable(folder, index):
            intact.add(index)
        else:
            log.warning(
                "%s: damaged (does not read back); deleted, the region is computed again", region_path(folder, index)
            )
            region_path(folder, index).unlink()
    return intact

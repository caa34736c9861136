"""Per-region results on disk (``<store>/nuclei/region_<index>.npz``): what makes a run resumable.

Each file is written to a temporary name and renamed, so a file that exists is complete.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pathoseg.region import RegionResult

REMOVED_KEYS = ("too_small", "too_large", "irregular", "degenerate")


def region_path(folder: Path, index: int) -> Path:
    return Path(folder) / f"region_{index:06d}.npz"


def save_region(folder: Path, result: RegionResult) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(p) for p in result.polygons], np.int64)
    coords = np.concatenate(result.polygons) if result.polygons else np.zeros((0, 2))
    arrays = {"coords": coords.astype(np.float64), "lengths": lengths, "centroids": result.centroids,
              "removed": np.array([result.removed.get(k, 0) for k in REMOVED_KEYS], np.int64),
              **{f"m_{key}": np.asarray(values) for key, values in result.measurements.items()}}
    target = region_path(folder, result.index)
    temporary = target.with_name(f".{target.name}.partial.npz")
    np.savez(temporary, **arrays)
    os.replace(temporary, target)


def load_region(folder: Path, index: int) -> RegionResult:
    with np.load(region_path(folder, index), allow_pickle=False) as data:
        offsets = np.cumsum(data["lengths"])[:-1]
        polygons = np.split(data["coords"], offsets) if len(data["lengths"]) else []
        measurements = {key[2:]: data[key] for key in data.files if key.startswith("m_")}
        removed = dict(zip(REMOVED_KEYS, (int(v) for v in data["removed"])))
        return RegionResult(index, list(polygons), data["centroids"], measurements, removed)


def finished_regions(folder: Path) -> set[int]:
    folder = Path(folder)
    if not folder.is_dir():
        return set()
    return {int(p.stem.split("_")[1]) for p in folder.glob("region_*.npz") if p.stem.split("_")[1].isdigit()}

"""QuPath-flavoured GeoJSON: a FeatureCollection of ``detection`` features, streamed, written atomically.

QuPath's rules (shared/REFERENCE.md): ``properties.objectType`` ``detection``; ``classification`` ``{name, color}``;
``measurements`` a flat object of finite numbers; ``id`` a UUID string; polygons closed, valid, in level-0 pixels.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

# Stable namespace so that identical nuclei get identical ids across runs and schedulers.
NUCLEUS_NAMESPACE = uuid.UUID("3f0c1c8e-7a4e-4f7e-9d55-6f1d2b0c9a11")


def nucleus_feature(ring_xy: np.ndarray, class_name: str, class_color: list[int], measurements: dict[str, float],
                    id_seed: str, object_type: str = "detection", name: str | None = None) -> dict:
    """One QuPath object (a detection unless ``object_type`` says otherwise) as a GeoJSON Feature. ``ring_xy``
    (K, 2) level-0 (x, y), not closed (closed here)."""
    ring = np.round(np.asarray(ring_xy, dtype=float), 2).tolist()
    ring.append(ring[0])
    clean = {name: float(value) for name, value in measurements.items() if value is not None and
             math.isfinite(float(value))}
    properties = {"objectType": object_type,
                  "classification": {"name": class_name, "color": [int(c) for c in class_color]},
                  "measurements": clean}
    if name is not None:
        properties["name"] = name
    return {"type": "Feature", "id": str(uuid.uuid5(NUCLEUS_NAMESPACE, id_seed)),
            "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": properties}


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary sibling path; renames it to ``path`` only if the block finishes."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


class FeatureCollectionWriter:
    """Streams features into ``path`` (gzip when it ends in .gz); the file appears only when complete."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.count = 0

    def __enter__(self) -> "FeatureCollectionWriter":
        self._atomic = atomic_path(self.path)
        temporary = self._atomic.__enter__()
        # gzip level 6: a third of level 9's time for 2% more bytes (level 9 took a fifth of the outputs' time)
        self._handle = (gzip.open(temporary, "wt", encoding="utf-8", compresslevel=6) if self.path.suffix == ".gz"
                        else open(temporary, "w", encoding="utf-8"))
        self._handle.write('{"type": "FeatureCollection", "features": [\n')
        return self

    def write(self, feature: dict) -> None:
        if self.count:
            self._handle.write(",\n")
        self._handle.write(json.dumps(feature, ensure_ascii=False))
        self.count += 1

    def __exit__(self, kind, value, traceback) -> None:
        self._handle.write("\n]}\n")
        self._handle.close()
        self._atomic.__exit__(kind, value, traceback)


def read_features(path: str | Path) -> list[dict]:
    """Features of a GeoJSON file (.geojson or .geojson.gz): FeatureCollection, Feature or list."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        data = json.load(handle)
    if isinstance(data, list):
        return data
    if data.get("type") == "Feature":
        return [data]
    return data.get("features", [])

"""QuPath-flavoured GeoJSON: a FeatureCollection of ``detection`` features, streamed, written atomically.

QuPath's rules (shared/REFERENCE.md): ``properties.objectType`` ``detection``; ``classification`` ``{name, color}``;
``measurements`` a flat object of finite numbers; ``id`` a UUID string; polygons closed, valid, in level-0 pixels.
"""

from __future__ import annotations

import gzip
import json
import math
import uuid
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import numpy as np
import shapely

from pathoseg.errors import InputError
from pathoseg.io.files import atomic_path

# Stable namespace so that identical nuclei get identical ids across runs and schedulers.
NUCLEUS_NAMESPACE = uuid.UUID("3f0c1c8e-7a4e-4f7e-9d55-6f1d2b0c9a11")
# QuPath (0.6+) snaps every imported geometry to this grid, and rejects the whole file if one is then invalid.
QUPATH_GRID_PX = 0.01


def snap_rings(rings_xy: list[np.ndarray]) -> tuple[list[np.ndarray | None], int]:
    """Outlines as QuPath will hold them: snapped to ``QUPATH_GRID_PX`` and valid there. Most only have their
    coordinates rounded; one that rounding would make invalid (a neck narrower than the grid, a near-touching fold,
    a spike, or invalid already) is snap-rounded into a valid shape instead and keeps its largest part; one that
    collapses becomes None.

    Parameters
    ----------
    rings_xy : list of (K, 2) float (x, y) rings in level-0 pixels, not closed.

    Returns
    -------
    The (K', 2) snapped rings (not closed) or None, and how many would have been invalid on the grid (repaired).
    """
    polygons = np.array([shapely.Polygon(ring) if len(ring) >= 3 else shapely.Polygon() for ring in rings_xy], object)
    rounded = shapely.set_precision(polygons, QUPATH_GRID_PX, mode="pointwise")
    broken = ~(shapely.is_valid(polygons) & shapely.is_valid(rounded)) | (shapely.area(rounded) <= 0)
    repaired = shapely.set_precision(shapely.make_valid(polygons[broken]), QUPATH_GRID_PX)  # valid output
    rounded[broken] = [largest_polygon(geometry) for geometry in repaired]
    snapped = [
        None if polygon is None or polygon.is_empty else np.round(np.asarray(polygon.exterior.coords)[:-1], 2)
        for polygon in rounded
    ]
    return snapped, int(broken.sum())


def largest_polygon(geometry: shapely.Geometry) -> shapely.Polygon | None:
    """The largest polygonal part of a geometry, without holes (QuPath's detections are single rings)."""
    parts = [part for part in shapely.get_parts(geometry) if part.geom_type == "Polygon" and part.area > 0]
    return shapely.Polygon(max(parts, key=lambda part: part.area).exterior) if parts else None


def nucleus_feature(
    ring_xy: np.ndarray,
    class_name: str,
    class_color: list[int],
    measurements: dict[str, float],
    id_seed: str,
    object_type: str = "detection",
    name: str | None = None,
) -> dict:
    """One QuPath object (a detection unless ``object_type`` says otherwise) as a GeoJSON Feature. ``ring_xy``
    (K, 2) level-0 (x, y), not closed (closed here)."""
    ring = np.round(np.asarray(ring_xy, dtype=float), 2).tolist()
    ring.append(ring[0])
    return qupath_feature(
        {"type": "Polygon", "coordinates": [ring]}, class_name, class_color, measurements, id_seed, object_type, name
    )


def annotation_feature(
    geometry: shapely.Geometry,
    class_name: str,
    class_color: list[int],
    measurements: dict[str, float],
    id_seed: str,
    name: str,
) -> dict | None:
    """One QuPath annotation of a (Multi)Polygon in level-0 pixels, holes kept, snapped to ``QUPATH_GRID_PX`` into
    a valid geometry; None when nothing of it survives the snapping."""
    snapped = shapely.set_precision(shapely.make_valid(geometry), QUPATH_GRID_PX)
    parts = [part for part in shapely.get_parts(snapped) if part.geom_type == "Polygon" and part.area > 0]
    if not parts:
        return None
    shape = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
    return qupath_feature(
        json.loads(shapely.to_geojson(shape)), class_name, class_color, measurements, id_seed, "annotation", name
    )


def qupath_feature(
    geometry: dict,
    class_name: str,
    class_color: list[int],
    measurements: dict[str, float],
    id_seed: str,
    object_type: str,
    name: str | None = None,
) -> dict:
    """A GeoJSON Feature as QuPath reads it: a UUID id (stable: from ``id_seed``), ``objectType``, a classification
    with an [r, g, b] colour, finite measurements only (QuPath rejects the file for a non-number, drops null)."""
    clean = {
        key: float(value) for key, value in measurements.items() if value is not None and math.isfinite(float(value))
    }
    properties = {
        "objectType": object_type,
        "classification": {"name": class_name, "color": [int(c) for c in class_color]},
        "measurements": clean,
    }
    if name is not None:
        properties["name"] = name
    return {
        "type": "Feature",
        "id": str(uuid.uuid5(NUCLEUS_NAMESPACE, id_seed)),
        "geometry": geometry,
        "properties": properties,
    }


def encode_fragment(text: str, compress: bool) -> bytes:
    """``text`` as a FeatureCollectionWriter stores it: UTF-8, or one gzip member (level 6: a third of level 9's time
    for 2% more bytes; no timestamp, so equal text gives equal bytes) when ``compress``."""
    data = text.encode("utf-8")
    return gzip.compress(data, compresslevel=6, mtime=0) if compress else data


def features_text(features: Iterable[dict]) -> str:
    """Features as the text of a FeatureCollection's array: JSON objects joined by ``,\\n``."""
    return ",\n".join(json.dumps(feature, ensure_ascii=False) for feature in features)


class FeatureCollectionWriter:
    """Streams features into ``path`` (gzip when it ends in .gz); the file appears only when complete.

    Features come one at a time (``write``) or as fragments rendered elsewhere, e.g. on Dask workers
    (``write_fragment``: ``encode_fragment(features_text(...))``). A .gz file is a series of gzip members, which
    gzip readers (Python's gzip, zcat, Java's GZIPInputStream in QuPath) read as one stream.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.compress = self.path.suffix == ".gz"
        self.count = 0
        self._pending: list[str] = []

    def __enter__(self) -> FeatureCollectionWriter:
        self._atomic = atomic_path(self.path)
        self._handle = open(self._atomic.__enter__(), "wb")
        self._pending.append('{"type": "FeatureCollection", "features": [\n')
        return self

    def write(self, feature: dict) -> None:
        """Append one feature (written out in batches)."""
        self._pending.append((",\n" if self.count else "") + features_text([feature]))
        self.count += 1
        if len(self._pending) >= 1000:
            self._flush()

    def write_fragment(self, fragment: bytes, count: int) -> None:
        """``count`` features (none: nothing is written) as ``encode_fragment`` gave them."""
        if count:
            if self.count:
                self._pending.append(",\n")
            self._flush()
            self._handle.write(fragment)
            self.count += count

    def _flush(self) -> None:
        if self._pending:
            self._handle.write(encode_fragment("".join(self._pending), self.compress))
            self._pending = []

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._pending.append("\n]}\n")
        self._flush()
        self._handle.close()
        self._atomic.__exit__(kind, value, traceback)


class GeoJSONError(InputError):
    """A GeoJSON file that cannot be read as features; the message names the file and the problem."""


def read_features(path: str | Path) -> list[dict]:
    """The features of a GeoJSON file, gzipped or not (told by its first bytes, whatever its name): a
    FeatureCollection, a Feature, a list of features or a bare geometry. GeoJSONError where it is none of these."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        document = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GeoJSONError(f"{path}: not a readable GeoJSON file ({error.__class__.__name__})") from None
    if isinstance(document, list):
        return document
    if isinstance(document, dict) and document.get("type") == "FeatureCollection":
        return document.get("features", [])
    if isinstance(document, dict) and document.get("type") == "Feature":
        return [document]
    if isinstance(document, dict) and "coordinates" in document:
        return [{"type": "Feature", "geometry": document, "properties": {}}]
    raise GeoJSONError(f"{path}: not GeoJSON features (a Feature, a FeatureCollection or an array of features)")

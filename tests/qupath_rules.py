"""A checker for QuPath's GeoJSON import rules (shared/REFERENCE.md), used by the tests."""

from __future__ import annotations

import gzip
import json
import math
import uuid
from pathlib import Path

import shapely
from shapely.geometry import shape

QUPATH_GRID_PX = 0.01  # QuPath 0.6+ snaps every imported geometry to this grid (JTS's precision reducer)


FLOAT32_MAX = 3.4028234663852886e38  # QuPath stores measurements as 32-bit floats


def valid_on_qupath_grid(geometry) -> bool:
    """What QuPath needs of a geometry to import the file: still valid, non-empty and of its type once snapped."""
    snapped = shapely.set_precision(geometry, QUPATH_GRID_PX, mode="pointwise")
    return snapped.geom_type == geometry.geom_type and snapped.is_valid and not snapped.is_empty and snapped.area > 0


def _reject_constant(name):
    raise ValueError(f"non-JSON number {name} in GeoJSON")


def _check_rings(geometry: dict) -> None:
    polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    for rings in polygons:
        for ring in rings:
            assert len(ring) >= 4 and ring[0] == ring[-1], "closed rings (an unclosed ring rejects the whole file)"


def _check_properties(props: dict, object_types: tuple[str, ...]) -> None:
    # a missing objectType or "Detection" (capital D) silently becomes an annotation
    assert props.get("objectType") in object_types
    assert "type" not in props, "the class never goes in properties.type"
    classification = props["classification"]
    assert isinstance(classification["name"], str) and classification["name"]
    color = classification["color"]  # required, and a list: a "#ff0000" string rejects the whole file
    assert isinstance(color, list) and len(color) == 3
    assert all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)
    measurements = props["measurements"]
    assert isinstance(measurements, dict) and measurements
    for name, value in measurements.items():
        # a string rejects the file; null and true are dropped with a warning; values are stored as float32
        assert isinstance(name, str)
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{name}: {value!r}"
        assert math.isfinite(value) and abs(value) <= FLOAT32_MAX, f"{name}: {value!r}"
    nested = [
        key
        for key, value in props.items()
        if isinstance(value, (dict, list)) and key not in ("classification", "measurements")
    ]
    assert not nested, f"nested properties {nested} are dropped by QuPath"


def check_qupath_geojson(
    path: Path, width: int, height: int, object_types: tuple[str, ...] = ("detection",)
) -> list[dict]:
    """Assert every QuPath import rule (REFERENCE.md; qupath-core 0.6/0.7 ``PathIO.readObjects``) on a file of
    objects in a ``width`` x ``height`` level-0 slide; returns the features."""
    assert path.name.endswith((".geojson", ".geojson.gz")), "a file named only .gz reads nothing"
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        data = json.load(handle, parse_constant=_reject_constant)
    assert data["type"] == "FeatureCollection"
    features = data["features"]
    ids = set()
    for feature in features:
        assert feature["type"] == "Feature"
        uuid.UUID(feature["id"])  # a UUID string, or QuPath ignores it
        ids.add(feature["id"])
        _check_properties(feature["properties"], object_types)
        geometry = feature["geometry"]  # "geometry": null rejects the whole file
        assert geometry is not None and geometry["type"] in ("Polygon", "MultiPolygon")
        if feature["properties"]["objectType"] == "detection":
            assert geometry["type"] == "Polygon", "a nucleus is one polygon"
        _check_rings(geometry)
        polygon = shape(geometry)
        assert polygon.is_valid and polygon.area > 0  # a bow-tie, a hole outside its shell, overlapping parts
        assert valid_on_qupath_grid(polygon), "one geometry invalid after QuPath's snapping rejects the whole file"
        x0, y0, x1, y1 = polygon.bounds
        assert 0 <= x0 and 0 <= y0 and x1 <= width and y1 <= height, "level-0 pixel coordinates inside the slide"
    assert len(ids) == len(features), "ids are unique"
    return features

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


def valid_on_qupath_grid(polygon) -> bool:
    """What QuPath needs of a geometry to import the file: still one valid, non-empty polygon once snapped."""
    snapped = shapely.set_precision(polygon, QUPATH_GRID_PX, mode="pointwise")
    return snapped.geom_type == "Polygon" and snapped.is_valid and not snapped.is_empty and snapped.area > 0


def _reject_constant(name):
    raise ValueError(f"non-JSON number {name} in GeoJSON")


def check_qupath_geojson(path: Path, width: int, height: int) -> list[dict]:
    """Assert every QuPath rule; returns the features."""
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
        props = feature["properties"]
        assert props["objectType"] == "detection"
        assert "type" not in props, "the class never goes in properties.type"
        classification = props["classification"]
        assert isinstance(classification["name"], str) and classification["name"]
        color = classification["color"]  # required, and a list: a "#ff0000" string rejects the whole file
        assert len(color) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in color)
        measurements = props["measurements"]
        assert isinstance(measurements, dict) and measurements
        for name, value in measurements.items():
            assert isinstance(name, str)
            assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        geometry = feature["geometry"]
        assert geometry is not None and geometry["type"] == "Polygon"  # "geometry": null rejects the whole file
        ring = geometry["coordinates"][0]
        assert len(ring) >= 4 and ring[0] == ring[-1], "closed ring"
        polygon = shape(geometry)
        assert polygon.is_valid and polygon.area > 0
        assert valid_on_qupath_grid(polygon), "one geometry invalid after QuPath's snapping rejects the whole file"
        x0, y0, x1, y1 = polygon.bounds
        assert 0 <= x0 and 0 <= y0 and x1 <= width and y1 <= height, "level-0 pixel coordinates inside the slide"
    assert len(ids) == len(features), "ids are unique"
    return features

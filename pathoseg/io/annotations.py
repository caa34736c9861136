"""Regions of interest: polygon annotations read from GeoJSON, as QuPath exports them.

QuPath writes a Feature, a FeatureCollection or a bare array of features (optionally gzipped), with coordinates in
level-0 pixels and the annotation's name and class in ``properties``. Detections and cells in the same file are not
regions and are skipped.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import shapely
from shapely.geometry import shape

NOT_REGIONS = ("detection", "cell", "tile")


class AnnotationError(ValueError):
    """An annotation file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Annotation:
    """One region of interest: its name and its (Multi)Polygon in level-0 pixels (x, y)."""

    name: str
    polygon: shapely.Geometry


def _features(document, path: Path) -> list[dict]:
    if isinstance(document, list):
        return document
    if isinstance(document, dict) and document.get("type") == "FeatureCollection":
        return document.get("features", [])
    if isinstance(document, dict) and document.get("type") == "Feature":
        return [document]
    if isinstance(document, dict) and "coordinates" in document:
        return [{"type": "Feature", "geometry": document, "properties": {}}]
    raise AnnotationError(f"{path}: not GeoJSON features (a Feature, a FeatureCollection or an array of features)")


def _name(properties: dict, number: int) -> str:
    classification = properties.get("classification")
    class_name = classification.get("name") if isinstance(classification, dict) else classification
    return str(properties.get("name") or class_name or f"annotation {number}")


def _polygonal(geometry: shapely.Geometry) -> shapely.Geometry:
    """The polygons of a geometry, made valid (self-touching outlines as drawn by hand)."""
    valid = shapely.make_valid(geometry)
    parts = [part for part in shapely.get_parts(valid) if part.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def read_annotations(path: str | Path) -> list[Annotation]:
    """The polygon annotations of a GeoJSON file (``.geojson`` or ``.geojson.gz``).

    Raises AnnotationError for a missing, unreadable or non-GeoJSON file, or one without any polygon annotation.
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: no such file")
    try:
        raw = path.read_bytes()
        document = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AnnotationError(f"{path}: not a readable GeoJSON file ({error.__class__.__name__})") from None
    annotations = []
    for number, feature in enumerate(_features(document, path), start=1):
        properties = feature.get("properties") or {}
        if properties.get("objectType") in NOT_REGIONS or not feature.get("geometry"):
            continue
        try:
            polygon = _polygonal(shape(feature["geometry"]))
        except (shapely.errors.GEOSException, ValueError, TypeError, KeyError, AttributeError) as error:
            raise AnnotationError(f"{path}: feature {number} has an invalid geometry ({error})") from None
        if not polygon.is_empty:
            annotations.append(Annotation(_name(properties, number), polygon))
    if not annotations:
        raise AnnotationError(f"{path}: holds no polygon annotation")
    return annotations


@dataclass(frozen=True)
class RegionOfInterest:
    """The annotations of one file that a run is limited to."""

    path: Path
    annotations: list[Annotation]

    @functools.cached_property
    def union(self) -> shapely.Geometry:
        """(Multi)Polygon in level-0 pixels."""
        return shapely.union_all([annotation.polygon for annotation in self.annotations])

    @property
    def digest(self) -> str:
        """sha256 of the union's WKB: what tells a rerun that the region changed."""
        return hashlib.sha256(shapely.to_wkb(self.union)).hexdigest()


def read_roi(path: str | Path) -> RegionOfInterest:
    """The region of interest of a GeoJSON file (``read_annotations``)."""
    return RegionOfInterest(Path(path), read_annotations(path))

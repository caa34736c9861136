"""Regions of interest: polygon annotations read from GeoJSON, as QuPath exports them.

QuPath writes a Feature, a FeatureCollection or a bare array of features (optionally gzipped), with coordinates in
level-0 pixels and the annotation's name and class in ``properties``. Detections and cells in the same file are not
regions and are skipped. Annotations classified ``Ignore*`` (QuPath's class for areas to leave out) or ``Exclude...``
are cut out of the others, or, alone in a file, out of the whole slide.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import shapely
from shapely.geometry import shape

from pathoseg.errors import InputError
from pathoseg.io.geojson import GeoJSONError, read_features

NOT_REGIONS = ("detection", "cell", "tile")
EXCLUDING_CLASS = re.compile(r"^(ignore|exclude)", re.IGNORECASE)


class AnnotationError(InputError):
    """An annotation file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Annotation:
    """One region of interest: its name and its (Multi)Polygon in level-0 pixels (x, y); ``excluding``: an area to
    leave out (classified ``Ignore*`` or ``Exclude...``)."""

    name: str
    polygon: shapely.Geometry
    excluding: bool = False


def _class_name(properties: dict) -> str:
    classification = properties.get("classification")
    return str((classification.get("name") if isinstance(classification, dict) else classification) or "")


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
        features = read_features(path)
    except GeoJSONError as error:
        raise AnnotationError(str(error)) from None
    annotations = []
    for number, feature in enumerate(features, start=1):
        properties = feature.get("properties") or {}
        if properties.get("objectType") in NOT_REGIONS or not feature.get("geometry"):
            continue
        try:
            polygon = _polygonal(shape(feature["geometry"]))
        except (shapely.errors.GEOSException, ValueError, TypeError, KeyError, AttributeError) as error:
            raise AnnotationError(f"{path}: feature {number} has an invalid geometry ({error})") from None
        if not polygon.is_empty:
            class_name = _class_name(properties)
            annotations.append(
                Annotation(
                    str(properties.get("name") or class_name or f"annotation {number}"),
                    polygon,
                    bool(EXCLUDING_CLASS.match(class_name)),
                )
            )
    if not annotations:
        raise AnnotationError(f"{path}: holds no polygon annotation")
    return annotations


@dataclass(frozen=True)
class RegionOfInterest:
    """What a run is limited to: the annotations of one file (the excluded areas cut out of each) and their union.

    annotations : the including annotations, in the file's order.
    region : (Multi)Polygon in level-0 pixels, where nuclei count.
    """

    path: Path
    annotations: list[Annotation]
    region: shapely.Geometry

    @property
    def digest(self) -> str:
        """sha256 of the region's WKB: what tells a rerun that the region changed."""
        return hashlib.sha256(shapely.to_wkb(self.region)).hexdigest()


def read_roi(path: str | Path, slide_box: shapely.Geometry) -> RegionOfInterest:
    """The region of interest of a GeoJSON file (``read_annotations``) on a slide whose level-0 bounds are
    ``slide_box``: the union of its annotations, less the excluding ones (the whole slide less those, when the file
    holds only excluding annotations)."""
    annotations = read_annotations(path)
    excluded = shapely.union_all([a.polygon for a in annotations if a.excluding])
    kept = [Annotation(a.name, a.polygon.difference(excluded)) for a in annotations if not a.excluding]
    kept = [a for a in kept if not a.polygon.is_empty]
    region = shapely.union_all([a.polygon for a in kept]) if kept else slide_box
    return RegionOfInterest(Path(path), kept, region.difference(excluded))

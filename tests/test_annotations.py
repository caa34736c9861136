"""Regions of interest from GeoJSON as QuPath exports it: reading, rasterising, clear errors."""

import gzip
import json

import numpy as np
import pytest
import shapely

from pathoseg.io.annotations import AnnotationError, read_annotations, read_roi
from pathoseg.tiling.tissue import polygon_mask

SQUARE_WITH_HOLE = {
    "type": "Polygon",
    "coordinates": [
        [[0, 0], [400, 0], [400, 400], [0, 400], [0, 0]],
        [[100, 100], [300, 100], [300, 300], [100, 300], [100, 100]],
    ],
}
BOWTIE = {"type": "Polygon", "coordinates": [[[500, 0], [700, 200], [700, 0], [500, 200], [500, 0]]]}


def feature(geometry, **properties):
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def test_qupath_export_gives_named_polygons_and_skips_detections(tmp_path):
    collection = {
        "type": "FeatureCollection",
        "features": [
            feature(SQUARE_WITH_HOLE, objectType="annotation", classification={"name": "Tumor", "color": [200, 0, 0]}),
            feature(BOWTIE, objectType="annotation", name="hotspot"),
            feature({"type": "Point", "coordinates": [5, 5]}, objectType="annotation", name="a point"),
            feature({"type": "Polygon", "coordinates": [[[1, 1], [9, 1], [9, 9], [1, 1]]]}, objectType="detection"),
            feature({"type": "Polygon", "coordinates": [[[0, 0], [50, 0], [50, 50], [0, 0]]]}),
        ],
    }
    path = tmp_path / "annotations.geojson.gz"
    path.write_bytes(gzip.compress(json.dumps(collection).encode()))
    annotations = read_annotations(path)
    assert [a.name for a in annotations] == ["Tumor", "hotspot", "annotation 5"]
    assert annotations[0].polygon.area == 400 * 400 - 200 * 200
    bowtie = annotations[1].polygon  # a self-crossing outline, made valid: two triangles
    assert bowtie.is_valid and bowtie.area == pytest.approx(2 * 200 * 100 / 2)


@pytest.mark.parametrize("document", [[feature(SQUARE_WITH_HOLE)], feature(SQUARE_WITH_HOLE), SQUARE_WITH_HOLE])
def test_array_feature_or_bare_geometry(tmp_path, document):
    path = tmp_path / "roi.json"
    path.write_text(json.dumps(document))
    assert [a.polygon.area for a in read_annotations(path)] == [120000]


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        ("{not json", "not a readable GeoJSON file"),
        ('{"type": "Topology"}', "not GeoJSON features"),
        (json.dumps([feature({"type": "Point", "coordinates": [1, 2]})]), "holds no polygon annotation"),
        (
            json.dumps([feature({"type": "Polygon", "coordinates": [[[0, 0], [1]]]})]),
            "feature 1 has an invalid geometry",
        ),
    ],
)
def test_bad_annotation_file_is_one_line_naming_it(tmp_path, content, message):
    path = tmp_path / "roi.geojson"
    if content is not None:
        path.write_text(content)
    with pytest.raises(AnnotationError, match=message) as error:
        read_annotations(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_polygon_mask_is_pixel_centres_inside():
    region = shapely.geometry.shape(SQUARE_WITH_HOLE)
    origin, level0_per_px = (-37.0, 13.0), 8.0
    mask = polygon_mask(region, (60, 70), origin, level0_per_px)
    rows, cols = np.mgrid[:60, :70]
    centres_x, centres_y = origin[0] + (cols + 0.5) * level0_per_px, origin[1] + (rows + 0.5) * level0_per_px
    expected = shapely.contains_xy(region, centres_x, centres_y)
    on_edge = shapely.intersects_xy(region.boundary, centres_x, centres_y)
    assert mask.sum() > 1000 and np.array_equal(mask[~on_edge], expected[~on_edge])


def test_ignore_annotations_are_cut_out(tmp_path):
    """QuPath's Ignore* class (or Exclude...) marks areas to leave out: cut from the other annotations, or from the
    whole slide when the file holds nothing else."""
    slide_box = shapely.box(0, 0, 1000, 800)
    necrosis = shapely.box(20, 20, 80, 80)  # inside the square, outside its hole
    path = tmp_path / "roi.geojson"
    path.write_text(
        json.dumps(
            [
                feature(SQUARE_WITH_HOLE, classification={"name": "Tumor"}),
                feature(shapely.geometry.mapping(necrosis), classification={"name": "Ignore*"}, name="necrosis"),
            ]
        )
    )
    roi = read_roi(path, slide_box)
    assert [a.name for a in roi.annotations] == ["Tumor"]
    assert roi.region.area == roi.annotations[0].polygon.area == 120000 - 60 * 60
    path.write_text(json.dumps([feature(shapely.geometry.mapping(necrosis), classification={"name": "Exclude"})]))
    roi = read_roi(path, slide_box)
    assert roi.annotations == [] and roi.region.area == 1000 * 800 - 60 * 60

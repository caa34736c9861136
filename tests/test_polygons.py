"""Outlines traced all at once equal scikit-image's ``find_contours`` on each instance, vertex for vertex."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared
from PIL import Image
from scipy import ndimage
from shapely.geometry import Polygon
from skimage.measure import find_contours

from pathoseg.stitch.polygons import clean_polygon, instance_polygons


def contour_polygons(labels: np.ndarray, simplify_px: float) -> list[Polygon | None]:
    """The per-instance way: the longest ``find_contours`` outline of each instance's mask with a ring of background
    around it (outside the image counts as background), simplified, then ``clean_polygon``."""
    polygons: list[Polygon | None] = []
    padded = np.pad(labels, 1)
    for label, box in enumerate(ndimage.find_objects(padded), start=1):
        if box is None:
            polygons.append(None)
            continue
        rows, cols = (slice(s.start - 1, s.stop + 1) for s in box)
        contour = max(find_contours(padded[rows, cols] == label, 0.5), key=len)
        # padded pixel (r, c) is image pixel (r - 1, c - 1), whose centre is at + 0.5
        xy = np.stack([contour[:, 1] + cols.start - 0.5, contour[:, 0] + rows.start - 0.5], axis=1)
        polygon = Polygon(xy).simplify(simplify_px, preserve_topology=False) if simplify_px else Polygon(xy)
        polygons.append(clean_polygon(polygon))
    return polygons


def assert_same_polygons(labels: np.ndarray, simplify_px: float) -> None:
    expected, got = contour_polygons(labels, simplify_px), instance_polygons(labels, simplify_px)
    assert len(got) == len(expected)
    for label, (want, have) in enumerate(zip(expected, got), start=1):
        assert (want is None and have is None) or want.wkb == have.wkb, f"instance {label}"


@pytest.mark.parametrize("seed", range(12))
def test_outlines_equal_find_contours_on_shapes_with_holes_pieces_and_edges(seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48]
    radius = np.hypot(yy - 24, xx - 24)
    # an annulus whose jagged hole is often its longest outline (find_contours starts a hole one vertex later)
    labels = ((radius < rng.uniform(14, 23)) & (radius > rng.uniform(3, 9) + 8 * rng.random((48, 48)))).astype(int)
    # specks of a second label: many pieces of equal length, corner-touching pixels, the image's edge
    labels[rng.random((48, 48)) < 0.03] = 2
    blobs = ndimage.label(ndimage.gaussian_filter(rng.random((48, 48)), 2) > 0.53)[0]
    labels = np.where(labels == 0, np.where(blobs > 0, blobs + 2, 0), labels).astype(np.int32)
    labels[labels == 5] = 0  # an absent label
    for simplify_px in (0.0, 0.3):
        assert_same_polygons(labels, simplify_px)


def test_outlines_equal_find_contours_on_real_nuclei():
    folder = shared("monuseg/train/labels")
    labels = np.asarray(Image.open(sorted(folder.glob("*.png"))[0])).astype(np.int32)
    assert labels.max() > 300
    assert_same_polygons(labels, 0.3)


def test_no_outlines_without_instances():
    assert instance_polygons(np.zeros((5, 7), np.int32)) == []
    assert instance_polygons(np.array([[0, 2]], np.int32))[0] is None

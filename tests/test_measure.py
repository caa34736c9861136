"""Measurements against independent computations; positivity and scores by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from shapely.geometry import Polygon
from skimage.draw import ellipse
from skimage.measure import regionprops_table

from pathoseg.config import FilterConfig
from pathoseg.measure.biomarkers import class_summary, dab_bins, positivity_summary
from pathoseg.measure.nuclei import (
    ellipse_axes,
    label_maxima,
    measure_nuclei,
    outline_solidity,
    pixel_perimeters,
    plausible,
)
from pathoseg.measure.stain import stain_od
from pathoseg.stitch.merge import keep_labels
from pathoseg.stitch.polygons import instance_polygons


@pytest.fixture
def two_ellipses():
    labels = np.zeros((120, 160), np.int32)
    labels[ellipse(40, 50, 20, 30, shape=labels.shape)] = 1  # semi-axes 20 (rows) x 30 (cols)
    labels[ellipse(85, 115, 15, 15, shape=labels.shape)] = 2  # a disk of radius 15
    rgb = np.full((120, 160, 3), 240, np.uint8)
    rgb[labels == 1] = (60, 40, 120)  # hematoxylin-like
    rgb[labels == 2] = (150, 90, 40)  # DAB brown
    n_classes = 5
    nc_prob = np.zeros((n_classes, *labels.shape), np.float32)
    nc_prob[0] = 1
    nc_prob[:, labels == 1] = np.array([0, 0.1, 0.1, 0.7, 0.1])[:, None]
    nc_prob[:, labels == 2] = np.array([0, 0.1, 0.6, 0.2, 0.1])[:, None]
    return labels, rgb, (labels > 0).astype(np.float32) * 0.9, nc_prob


def test_shape_measurements_match_geometry(two_ellipses):
    labels, rgb, np_prob, nc_prob = two_ellipses
    mpp = 0.5
    polygons = instance_polygons(labels, simplify_px=0)
    m = measure_nuclei(labels, polygons, rgb, np_prob, nc_prob, mpp)
    for i, polygon in enumerate(polygons):
        assert m["area_um2"][i] == pytest.approx(polygon.area * mpp**2, rel=0.05)
        assert m["perimeter_um"][i] == pytest.approx(polygon.length * mpp, rel=0.08)
    assert m["area_um2"][0] == pytest.approx(np.pi * 20 * 30 * mpp**2, rel=0.03)
    assert m["major_axis_um"][0] == pytest.approx(60 * mpp, rel=0.05)
    assert m["minor_axis_um"][0] == pytest.approx(40 * mpp, rel=0.05)
    assert m["circularity"][1] > 0.85 and m["circularity"][0] < m["circularity"][1]
    assert m["eccentricity"][1] < 0.2
    assert m["solidity"][0] > 0.95


def test_stain_class_and_confidence(two_ellipses):
    labels, rgb, np_prob, nc_prob = two_ellipses
    m = measure_nuclei(labels, instance_polygons(labels), rgb, np_prob, nc_prob, 0.5)
    assert m["hematoxylin_od_mean"][0] > m["hematoxylin_od_mean"][1]
    assert m["dab_od_mean"][1] > 0.2 > m["dab_od_mean"][0]
    assert m["class_id"].tolist() == [3, 2]
    assert m["class_probability"][0] == pytest.approx(0.7)
    assert m["detection_probability"][0] == pytest.approx(0.9, rel=1e-3)
    assert 0 < m["class_entropy"][0] < 1


def test_stain_od_units():
    white, black = stain_od(np.array([[[255, 255, 255], [0, 0, 0]]], np.uint8))[0]
    assert white.max() == pytest.approx(0, abs=1e-6)
    assert black.sum() > 2  # log10(256) ~ 2.4 OD per channel, unmixed


def test_positivity_by_hand():
    bins = dab_bins(np.array([0.1, 0.25, 0.45, 0.65, 0.9]))
    assert bins.tolist() == [0, 1, 2, 3, 3]
    summary = positivity_summary(bins)
    assert summary["positive_percent"] == pytest.approx(80)
    assert summary["h_score"] == pytest.approx((1 + 2 + 3 + 3) / 5 * 100)
    assert summary["allred_proportion_score"] == 5
    assert summary["allred_intensity_score"] == 2
    assert summary["counts"] == {"Negative": 1, "1+": 1, "2+": 1, "3+": 2}


def test_class_summary_densities():
    summary = class_summary(np.array([1, 1, 2, 3]), ["background", "a", "b", "c"], tissue_area_mm2=2.0)
    assert summary["n_nuclei"] == 4 and summary["density_per_mm2"] == 2.0
    assert summary["classes"]["a"] == {"count": 2, "density_per_mm2": 1.0, "fraction": 0.5}


def test_pixel_shape_measures_are_regionprops():
    """Perimeter, axes, eccentricity and per-instance maxima, computed for every instance at once, equal
    scikit-image's and scipy's per-region values on touching, irregular instances."""
    rng = np.random.default_rng(0)
    labels = np.zeros((200, 200), np.int32)
    for label in range(1, 40):
        row, col = rng.integers(10, 190, 2)
        labels[
            ellipse(
                row, col, rng.integers(3, 12), rng.integers(3, 12), shape=labels.shape, rotation=rng.uniform(0, np.pi)
            )
        ] = label
    labels[rng.random(labels.shape) < 0.05] = 0  # ragged edges and holes
    labels = keep_labels(labels, np.unique(labels)[1:])
    n = int(labels.max())
    table = regionprops_table(
        labels, properties=("perimeter", "eccentricity", "axis_major_length", "axis_minor_length")
    )
    rows, cols = np.nonzero(labels)
    major, minor, eccentricity = ellipse_axes(rows, cols, labels[rows, cols], n)
    np.testing.assert_allclose(pixel_perimeters(labels, n), table["perimeter"], rtol=1e-12)
    np.testing.assert_allclose(major, table["axis_major_length"], rtol=1e-12)
    np.testing.assert_allclose(minor, table["axis_minor_length"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(eccentricity, table["eccentricity"], rtol=1e-12, atol=1e-12)
    values = rng.random(rows.size).astype(np.float32)
    expected_maxima = ndimage.maximum(values, labels[rows, cols], np.arange(1, n + 1))
    assert np.array_equal(label_maxima(values, labels[rows, cols], n), expected_maxima)


def test_solidity_is_the_outlines_and_missing_outlines_are_dropped():
    square = Polygon([(0, 0), (4, 0), (4, 4), (0, 4)])
    notched = Polygon([(0, 0), (4, 0), (4, 4), (2, 1), (0, 4)])
    solidity = outline_solidity([square, notched, None])
    assert solidity[0] == pytest.approx(1) and solidity[1] == pytest.approx(10 / 16) and np.isnan(solidity[2])
    filters = plausible({"area_um2": np.full(3, 20.0), "solidity": solidity}, FilterConfig(6, 500, 0.7))
    assert filters["keep"].tolist() == [True, False, False]
    assert filters["irregular"].tolist() == [False, True, False]
    assert filters["degenerate"].tolist() == [False, False, True]

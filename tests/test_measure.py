"""Measurements against independent computations; positivity and scores by hand."""

from __future__ import annotations

import numpy as np
import pytest

from skimage.draw import ellipse

from pathoseg.measure.biomarkers import class_summary, dab_bins, positivity_summary
from pathoseg.measure.nuclei import measure_nuclei
from pathoseg.measure.stain import stain_od
from pathoseg.stitch.polygons import instance_polygons


@pytest.fixture
def two_ellipses():
    labels = np.zeros((120, 160), np.int32)
    labels[ellipse(40, 50, 20, 30, shape=labels.shape)] = 1       # semi-axes 20 (rows) x 30 (cols)
    labels[ellipse(85, 115, 15, 15, shape=labels.shape)] = 2      # a disk of radius 15
    rgb = np.full((120, 160, 3), 240, np.uint8)
    rgb[labels == 1] = (60, 40, 120)     # hematoxylin-like
    rgb[labels == 2] = (150, 90, 40)     # DAB brown
    n_classes = 5
    nc_prob = np.zeros((n_classes, *labels.shape), np.float32)
    nc_prob[0] = 1
    nc_prob[:, labels == 1] = np.array([0, 0.1, 0.1, 0.7, 0.1])[:, None]
    nc_prob[:, labels == 2] = np.array([0, 0.1, 0.6, 0.2, 0.1])[:, None]
    return labels, rgb, (labels > 0).astype(np.float32) * 0.9, nc_prob


def test_shape_measurements_match_geometry(two_ellipses):
    labels, rgb, np_prob, nc_prob = two_ellipses
    mpp = 0.5
    m = measure_nuclei(labels, rgb, np_prob, nc_prob, mpp)
    polygons = instance_polygons(labels, simplify_px=0)
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
    m = measure_nuclei(labels, rgb, np_prob, nc_prob, 0.5)
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

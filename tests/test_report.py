"""report.html, per-tissue-region statistics, review squares, and the IHC example's brown nuclei."""

from __future__ import annotations

import base64
import gzip
import io
import json
from html.parser import HTMLParser

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import shared
from PIL import Image
from scipy import ndimage
from shapely.geometry import Point, shape
from skimage.color import rgb2hed

from pathoseg.cli import main
from pathoseg.geometry import SlideFrame
from pathoseg.io.regions import RegionResult
from pathoseg.measure.areas import positivity_hotspot, review_squares, tissue_region_stats
from pathoseg.outputs import NucleusStyle, write_overlay
from pathoseg.tiling.tissue import TissueMask

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source"}
SVG_LEAVES = {"rect", "line", "path", "circle"}


class StrictParser(HTMLParser):
    """Checks that every non-void element is closed in order, and collects the <img> sources."""

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.errors, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse_report(path) -> StrictParser:
    html = path.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    parser = StrictParser()
    parser.feed(html)
    parser.close()
    assert not parser.errors and not parser.stack, (parser.errors, parser.stack)
    for source in parser.images:
        assert source.startswith("data:image/jpeg;base64,")  # embedded: the page stands alone
        Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).verify()
    return parser


def test_tissue_region_stats_by_hand():
    mask = np.zeros((40, 60), bool)
    mask[5:15, 5:25] = True  # 200 px: the larger region, listed first
    mask[20:30, 40:50] = True  # 100 px
    tissue = TissueMask(mask, level0_per_px=16.0, mpp=4.0)
    origin = (1000.0, 2000.0)
    centroids = np.array([[10, 10], [20, 12], [45, 25], [2, 2]], float) * 16 + origin  # last: outside the mask
    class_ids = np.array([1, 2, 2, 1])
    stats = tissue_region_stats(
        tissue, origin, centroids, class_ids, ["background", "a", "b"], dab_bins=np.array([0, 3, 1, 2])
    )
    assert [s["id"] for s in stats] == [1, 2]
    big, small = stats
    assert big["bbox_level0"] == [1000 + 5 * 16, 2000 + 5 * 16, 20 * 16, 10 * 16]
    assert big["area_mm2"] == pytest.approx(200 * 16e-6)
    assert big["n_nuclei"] == 2 and big["classes"]["a"]["count"] == 1 and big["classes"]["b"]["fraction"] == 0.5
    assert big["density_per_mm2"] == pytest.approx(2 / (200 * 16e-6))
    assert small["n_nuclei"] == 1 and small["ihc"]["positive_percent"] == 100.0
    assert big["ihc"]["h_score"] == pytest.approx(150.0)


def test_review_squares_rank_by_confidence():
    rng = np.random.default_rng(0)
    origin = (100.0, 100.0)
    # three 128 µm squares at 0.5 µm/px (256 px): confident, doubtful, and one too sparse to rank
    centres = {(0, 0): (30, 0.9), (1, 0): (20, 0.3), (0, 1): (3, 0.1)}
    xy, confidence = [], []
    for (cx, cy), (n, conf) in centres.items():
        xy.append(origin + (np.array([cx, cy]) + rng.uniform(0.05, 0.95, (n, 2))) * 256)
        confidence.append(np.full(n, conf))
    review = review_squares(np.concatenate(xy), np.concatenate(confidence), 0.5, origin, min_nuclei=10)
    assert [s["bbox_level0"] for s in review["squares"]] == [[356, 100, 256, 256], [100, 100, 256, 256]]
    assert review["squares"][0]["low_confidence_percent"] == 100.0 and review["squares"][0]["nuclei"] == 20
    assert review["densest"]["nuclei"] == 30


HOTSPOT_FIELD_UM, HOTSPOT_MIN_NUCLEI = 100.0, 30  # the ROI is 256 µm wide: fields of a few dozen nuclei


def test_hotspot_finds_the_planted_field_and_needs_enough_nuclei():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 20000, (20000, 2))  # level-0 px at 0.25 µm: 5 mm square, 800 nuclei per mm²
    positive = rng.random(len(xy)) < 0.1
    planted = (np.abs(xy[:, 0] - 6000) < 900) & (np.abs(xy[:, 1] - 12000) < 900)  # a 450 µm field
    positive[planted] = rng.random(planted.sum()) < 0.6
    hotspot = positivity_hotspot(xy, positive, 0.25, (0.0, 0.0), field_um=450, min_nuclei=100)
    x, y, side, _ = hotspot["bbox_level0"]
    assert side == 1800 and abs(x + side / 2 - 6000) <= 450 and abs(y + side / 2 - 12000) <= 450
    assert hotspot["positive_percent"] > 45 and hotspot["n_nuclei"] >= 100
    assert positivity_hotspot(xy, positive, 0.25, (0.0, 0.0), field_um=450, min_nuclei=500) is None


@pytest.fixture(scope="module")
def ihc_run(tmp_path_factory):
    image = shared("examples/ihc-dab-roi.png")
    out = tmp_path_factory.mktemp("ihc")
    config = out / "hotspot.yaml"
    config.write_text(f"stain:\n  hotspot_field_um: {HOTSPOT_FIELD_UM}\n  hotspot_min_nuclei: {HOTSPOT_MIN_NUCLEI}\n")
    result = CliRunner().invoke(
        main,
        [
            "segment",
            str(image),
            "--mpp",
            "0.25",
            "-o",
            str(out),
            "--scheduler",
            "inprocess",
            "--quiet",
            "-c",
            str(config),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return image, out


def test_ihc_hotspot_is_the_field_of_highest_index(ihc_run):
    """Counted again from the GeoJSON: the hotspot holds what it says, and no field of the same grid with enough
    nuclei has a higher positive share."""
    _, out = ihc_run
    hotspot = json.loads((out / "summary.json").read_text())["ihc"]["hotspot"]
    features = json.loads(gzip.decompress((out / "nuclei.geojson.gz").read_bytes()))["features"]
    xy = np.array([shape(f["geometry"]).centroid.coords[0] for f in features])
    positive = np.array([f["properties"]["classification"]["name"] != "Negative" for f in features])
    side = HOTSPOT_FIELD_UM / 0.25

    def field(x, y):
        inside = (xy[:, 0] >= x) & (xy[:, 0] < x + side) & (xy[:, 1] >= y) & (xy[:, 1] < y + side)
        return inside.sum(), positive[inside].sum()

    x, y = hotspot["bbox_level0"][:2]
    assert field(x, y) == (hotspot["n_nuclei"], hotspot["positive"]) and hotspot["n_nuclei"] >= HOTSPOT_MIN_NUCLEI
    shares = [
        p / n
        for n, p in (
            field(gx, gy) for gx in np.arange(-side, 1024, side / 4) for gy in np.arange(-side, 1024, side / 4)
        )
        if n >= HOTSPOT_MIN_NUCLEI
    ]
    assert hotspot["positive_percent"] == pytest.approx(100 * max(shares))
    review = json.loads((out / "review.geojson").read_text())["features"]
    assert review[0]["properties"]["name"].startswith(f"Hotspot: {hotspot['positive_percent']:.1f}% positive")
    assert "Hotspot:" in " ".join(parse_report(out / "report.html").text)


def test_ihc_report_and_brown_nuclei(ihc_run):
    image_path, out = ihc_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stain_mode"] == "ihc"
    ihc = summary["ihc"]
    parser = parse_report(out / "report.html")
    text = " ".join(parser.text)
    assert f"{ihc['positive_percent']:.1f}% positive" in text and f"H-score {ihc['h_score']:.0f}" in text
    assert len(parser.images) == 2  # overlay and zoomed crop
    # Brown nuclei found independently: strong DAB blobs of nucleus size (skimage's rgb2hed, not our stain code).
    rgb = np.asarray(Image.open(image_path).convert("RGB"))
    dab = ndimage.gaussian_filter(rgb2hed(rgb)[..., 2], 2)
    blobs, n_blobs = ndimage.label(dab > 0.04)  # rgb2hed units: about a DAB OD of 0.25
    sizes = np.bincount(blobs.ravel())
    brown = [i for i in range(1, n_blobs + 1) if sizes[i] * 0.25**2 > 10]
    assert len(brown) >= 5
    features = json.loads(gzip.decompress((out / "nuclei.geojson.gz").read_bytes()))["features"]
    polygons = [(shape(f["geometry"]), f["properties"]["classification"]["name"]) for f in features]
    hits = 0
    for label in brown:
        y, x = ndimage.center_of_mass(blobs == label)
        found = [name for polygon, name in polygons if polygon.buffer(2).contains(Point(x, y))]
        hits += bool(found) and found[0] != "Negative"
    assert hits >= 0.8 * len(brown), f"{hits} of {len(brown)} brown nuclei found and scored positive"
    negative = [p for p, name in polygons if name == "Negative"]
    assert len(negative) > 0.8 * len(polygons)  # most nuclei here are blue
    review = json.loads((out / "review.geojson").read_text())["features"]
    assert review and all(f["properties"]["objectType"] == "annotation" for f in review)


def test_he_report_shows_counts_per_class_and_regions(tmp_path, svs_slide):
    result = CliRunner().invoke(
        main,
        ["segment", str(svs_slide), "-o", str(tmp_path), "--scheduler", "inprocess", "--quiet", "--stain", "he"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    parser = parse_report(tmp_path / "report.html")
    text = " ".join(parser.text)
    for name in summary["counts"]["classes"]:
        assert name in text
    assert f"{summary['nuclei']:,} nuclei" in text
    assert not summary["tissue"]["darkfield"] and "fluorescence" not in text
    regions = summary["tissue_regions"]
    assert regions and sum(r["area_mm2"] for r in regions) == pytest.approx(summary["tissue"]["area_mm2"], rel=0.01)
    assert sum(r["n_nuclei"] for r in regions) >= 0.95 * summary["nuclei"]


def test_fluorescence_slide_is_flagged(tmp_path, caplog):
    """A DAPI slide runs, but the user is told, on the terminal and in the report, that it is outside what the model
    was trained on; densities are per mm² of glowing tissue, not of the whole black slide."""
    slide = shared("slides/Hamamatsu-test3-DAPI-2-387.ndpi")
    result = CliRunner().invoke(
        main,
        # the fast model (0.5 µm/px): the warning does not depend on the model, and it reads a quarter of the pixels
        ["segment", str(slide), "-o", str(tmp_path), "--scheduler", "inprocess", "--quiet", "--model", "pathoseg-fast"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "a dark background, as in fluorescence" in caplog.text  # a warning, shown without -v
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["tissue"]["darkfield"] and summary["tissue"]["fraction"] < 0.85 and summary["nuclei"] > 1000
    assert "dark background, as in fluorescence" in " ".join(parse_report(tmp_path / "report.html").text)
    assert summary["quality"]["mpp_check"] is None  # brightfield reference areas do not apply


def test_whole_slide_overlay_draws_nuclei_as_dots(tmp_path):
    """At a whole slide's overview scale a nucleus is under a pixel: each is one pixel of its class colour."""
    frame = SlideFrame(slide_mpp=0.25, model_mpp=0.25)
    centroids = np.array([[1000.0, 2000.0], [5050.0, 7020.0], [9990.0, 120.0]])
    result = RegionResult(0, [np.zeros((4, 2))] * 3, centroids, {"class_id": np.array([1, 2, 3])})
    names = ["background", "other", "inflammatory", "epithelial"]
    colors = [[0, 0, 0], [10, 20, 30], [40, 50, 60], [70, 80, 90]]
    thumbnail = np.full((100, 100, 3), 255, np.uint8)
    write_overlay(
        tmp_path / "overlay.png",
        thumbnail,
        100.0,
        [result],
        frame,
        NucleusStyle.of(names, colors, "he", [0.2, 0.4, 0.6]),
    )
    overlay = np.asarray(Image.open(tmp_path / "overlay.png"))
    assert overlay[20, 10].tolist() == [10, 20, 30] and overlay[70, 50].tolist() == [40, 50, 60]
    assert overlay[1, 99].tolist() == [70, 80, 90]
    assert (overlay != 255).any(axis=2).sum() == 3

"""End to end through the CLI: real OpenSlide, real zarr, real model; outputs, QuPath rules, resume, errors."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest
import shapely
import zarr
from click.testing import CliRunner
from conftest import shared
from qupath_rules import check_qupath_geojson
from shapely.geometry import shape

from pathoseg.cli import main
from pathoseg.config import load_config
from pathoseg.io.slide import open_slide
from pathoseg.synthetic import SyntheticSlide, write_synthetic_slide


def run(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def svs_run(svs_slide, tmp_path_factory):
    out = tmp_path_factory.mktemp("svs-run")
    result = run("segment", svs_slide, "-o", out, "--scheduler", "inprocess", "--quiet")
    assert result.exit_code == 0, result.output
    return out, result


def test_segment_writes_every_output(svs_run):
    out, result = svs_run
    assert {"nuclei.geojson.gz", "summary.json", "summary.csv", "overlay.png", "store.zarr", "config.yaml"} <= set(
        os.listdir(out)
    )
    # the run's configuration, which -c takes back: the defaults and the options given
    assert load_config(out / "config.yaml") == load_config(None, {"cluster": {"scheduler": "inprocess"}})
    assert not [name for name in os.listdir(out) if "partial" in name]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["slide"]["vendor"] == "aperio"
    assert len(summary["model"]["sha256"]) == 64
    assert 0.05 < summary["tissue"]["area_mm2"] < 0.3
    assert summary["nuclei"] == summary["counts"]["n_nuclei"] > 100
    assert summary["run"]["peak_rss_mb_client"] > 0
    assert "nuclei in" in result.output


def test_geojson_follows_qupath_rules(svs_run, svs_slide):
    out, _ = svs_run
    width, height = open_slide(svs_slide).dimensions
    features = check_qupath_geojson(out / "nuclei.geojson.gz", width, height)
    names = {f["properties"]["classification"]["name"] for f in features}
    assert names <= {"other", "inflammatory", "epithelial", "spindle"}
    measurements = features[0]["properties"]["measurements"]
    assert {
        "Nucleus: Area µm^2",
        "Nucleus: Perimeter µm",
        "Nucleus: Circularity",
        "Class probability",
        "Nucleus: Hematoxylin OD mean",
    } <= set(measurements)


def test_nuclei_match_the_synthetic_truth(svs_run, svs_slide):
    """Detected nuclei sit on the nuclei the slide was drawn with (level-0 coordinates are right)."""
    out, _ = svs_run
    truth = SyntheticSlide(2600, 1800, 0.25, seed=0)
    true_xy = np.stack([truth.centre_x[truth.present], truth.centre_y[truth.present]], axis=1)
    found = check_qupath_geojson(out / "nuclei.geojson.gz", 2600, 1800)
    found_xy = np.array([shape(f["geometry"]).centroid.coords[0] for f in found])
    distance = np.linalg.norm(found_xy[:, None] - true_xy[None], axis=2).min(axis=1)
    assert np.median(distance) < 3, "centroids within a few level-0 px of the drawn nuclei"
    assert len(found) > 0.7 * len(true_xy)


def test_store_is_ome_zarr(svs_run):
    out, _ = svs_run
    root = zarr.open_group(str(out / "store.zarr"), mode="r", zarr_format=2)
    multiscales = root.attrs["multiscales"][0]
    assert multiscales["version"] == "0.4"
    assert [a["name"] for a in multiscales["axes"]] == ["c", "y", "x"]
    level0 = root[multiscales["datasets"][0]["path"]]
    assert level0.shape[0] == 3 and level0.chunks == (3, 512, 512)
    assert multiscales["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 0.25, 0.25]


def test_rerun_reuses_the_store_and_gives_the_same_nuclei(svs_run, svs_slide):
    out, _ = svs_run
    before = (out / "nuclei.geojson.gz").read_bytes()
    result = run("segment", svs_slide, "-o", out, "--scheduler", "inprocess", "--quiet")
    assert result.exit_code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["regions_computed"] == 0 and summary["run"]["regions_reused"] > 0
    assert gzip.decompress(before) == gzip.decompress((out / "nuclei.geojson.gz").read_bytes())


def test_ome_tiff_pyramid_gives_the_svs_nuclei(svs_run, tmp_path):
    """The same tiles in an OME-TIFF pyramid (levels in SubIFDs, which OpenSlide does not read) segment to the same
    nuclei as in the SVS."""
    ome = write_synthetic_slide(
        tmp_path / "synthetic.ome.tif", 2600, 1800, kind="ome-tiff", tile_px=256, min_level_px=512
    )
    result = run("segment", ome, "-o", tmp_path / "out", "--scheduler", "inprocess", "--quiet", "--no-gzip")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["slide"]["vendor"] == "ome-tiff" and summary["slide"]["levels"] == 3
    nuclei = json.loads((tmp_path / "out" / "nuclei.geojson").read_text())["features"]
    svs_nuclei = json.loads(gzip.decompress((svs_run[0] / "nuclei.geojson.gz").read_bytes()))["features"]
    assert [f["geometry"] for f in nuclei] == [f["geometry"] for f in svs_nuclei]


ROI = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}},
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[300, 300], [1400, 250], [1500, 1200], [350, 1300], [300, 300]],
                    [[700, 600], [1000, 600], [1000, 900], [700, 900], [700, 600]],
                ],
            },
        },
        {
            "type": "Feature",
            "properties": {"objectType": "annotation", "name": "hotspot 1"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[1800, 200], [2400, 200], [2400, 900], [1800, 900], [1800, 200]]],
            },
        },
        {
            "type": "Feature",
            "properties": {"objectType": "annotation", "classification": {"name": "Ignore*"}},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[400, 400], [700, 400], [700, 550], [400, 550], [400, 400]]],
            },
        },
    ],
}


def test_roi_gives_the_whole_runs_nuclei_inside_it(svs_run, svs_slide, tmp_path):
    """Limited to annotations (less the one classified Ignore*), a run reads less of the slide and finds exactly the
    nuclei of the whole-slide run whose centroid lies inside them; counts, densities and the report are per
    annotation."""
    roi_path = tmp_path / "roi.geojson"
    roi_path.write_text(json.dumps(ROI))
    out = tmp_path / "out"
    result = run("segment", svs_slide, "-o", out, "--scheduler", "inprocess", "--quiet", "--roi", roi_path)
    assert result.exit_code == 0, result.output
    tumour_polygon, hotspot_polygon, ignored = (shape(f["geometry"]) for f in ROI["features"])
    region = shapely.union_all([tumour_polygon, hotspot_polygon]).difference(ignored)
    whole = json.loads(gzip.decompress((svs_run[0] / "nuclei.geojson.gz").read_bytes()))["features"]
    inside = [f["geometry"] for f in whole if region.contains(shape(f["geometry"]).centroid)]
    found = json.loads(gzip.decompress((out / "nuclei.geojson.gz").read_bytes()))["features"]
    assert 0 < len(inside) < len(whole) and [f["geometry"] for f in found] == inside
    assert any(ignored.contains(shape(f["geometry"]).centroid) for f in whole)  # the ignored area held nuclei
    summary = json.loads((out / "summary.json").read_text())
    whole_summary = json.loads((svs_run[0] / "summary.json").read_text())
    assert summary["grid"]["tiles"] < whole_summary["grid"]["tiles"]
    tumour, hotspot = summary["roi"]["annotations"]
    assert (tumour["name"], hotspot["name"]) == ("Tumor", "hotspot 1")
    assert tumour["n_nuclei"] + hotspot["n_nuclei"] == summary["nuclei"] == len(inside)
    assert tumour["area_mm2"] == pytest.approx(tumour_polygon.difference(ignored).area * 0.25**2 * 1e-6, rel=1e-3)
    assert summary["tissue"]["area_mm2"] == pytest.approx(
        tumour["tissue_area_mm2"] + hotspot["tissue_area_mm2"], rel=1e-3
    )
    assert f"Tumor: {tumour['n_nuclei']} nuclei" in result.output
    assert "Regions of interest" in (out / "report.html").read_text()


@pytest.mark.parametrize(
    "polygon, message",
    [
        (
            [[5000, 5000], [6000, 5000], [6000, 6000], [5000, 5000]],
            "its annotations lie outside synthetic.svs (level-0 bounds 0, 0, 2600 x 1800 px)",
        ),
        ([[2, 2], [60, 2], [60, 60], [2, 2]], "no tissue of synthetic.svs inside its annotations"),
    ],
)
def test_roi_without_tissue_is_one_line(svs_slide, tmp_path, polygon, message):
    roi_path = tmp_path / "roi.geojson"
    roi_path.write_text(json.dumps({"type": "Polygon", "coordinates": [polygon]}))
    result = run("segment", svs_slide, "-o", tmp_path / "out", "--scheduler", "inprocess", "--quiet", "--roi", roi_path)
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {roi_path}: {message}"


def test_dropped_store_pixels_keep_reruns_instant(svs_run, svs_slide, tmp_path):
    """--drop-store-pixels: a finished slide's store keeps its nuclei, not its tiles; a rerun still reuses every
    region, and one that needs pixels again (other post-processing) tiles them again."""
    out = tmp_path / "out"
    args = ["segment", svs_slide, "-o", out, "--scheduler", "inprocess", "--quiet", "--drop-store-pixels"]
    assert run(*args).exit_code == 0
    store = out / "store.zarr"
    assert not [p for p in (store / "0").rglob("*") if p.is_file() and not p.name.startswith(".z")]
    assert not (store / "blocks.done").exists()
    assert (zarr.open_group(str(store), mode="r")["0"][:, :64, :64] == 255).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outputs"]["store_pixels"] == "dropped"
    whole = gzip.decompress((svs_run[0] / "nuclei.geojson.gz").read_bytes())
    assert gzip.decompress((out / "nuclei.geojson.gz").read_bytes()) == whole

    assert run(*args).exit_code == 0
    rerun = json.loads((out / "summary.json").read_text())["run"]
    assert rerun["regions_computed"] == 0 and rerun["regions_reused"] == summary["grid"]["regions"]
    (tmp_path / "other.yaml").write_text("postproc:\n  np_threshold: 0.5\n")
    assert run(*args, "-c", tmp_path / "other.yaml").exit_code == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["run"]["regions_computed"] == summary["grid"]["regions"] and again["nuclei"] > 0.8 * summary["nuclei"]


def test_upsampled_generic_tiff_and_plain_geojson(tiff_slide, tmp_path):
    result = run("segment", tiff_slide, "-o", tmp_path, "--scheduler", "inprocess", "--quiet", "--no-gzip", "--table")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["grid"]["model_width_px"] == 2800  # 1400 px at 0.5 µm -> 2800 at 0.25
    features = check_qupath_geojson(tmp_path / "nuclei.geojson", 1400, 1000)
    import csv

    with open(tmp_path / "nuclei.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(features) == summary["nuclei"]
    areas = sorted(float(r["area_um2"]) for r in rows)
    assert areas == pytest.approx(
        sorted(f["properties"]["measurements"]["Nucleus: Area µm^2"] for f in features), rel=1e-4
    )


def test_info_prints_slide_facts(svs_slide):
    result = run("info", svs_slide)
    assert result.exit_code == 0
    assert "aperio" in result.output and "0.2500 µm/px" in result.output and "tissue:" in result.output


@pytest.mark.parametrize("case", ["missing", "not-a-slide", "no-mpp", "empty", "unwritable"])
def test_bad_input_is_one_line_and_nonzero(case, tmp_path, svs_slide):
    out = tmp_path / "out"
    if case == "missing":
        args = ["segment", tmp_path / "nope.svs", "-o", out]
    elif case == "not-a-slide":
        (tmp_path / "bad.tiff").write_bytes(b"II*\x00garbage" * 10)
        args = ["segment", tmp_path / "bad.tiff", "-o", out]
    elif case == "no-mpp":
        from PIL import Image

        Image.new("RGB", (300, 300), (200, 100, 180)).save(tmp_path / "plain.png")
        args = ["segment", tmp_path / "plain.png", "-o", out]
    elif case == "empty":
        from PIL import Image

        Image.new("RGB", (600, 600), (245, 245, 245)).save(tmp_path / "glass.png")
        args = ["segment", tmp_path / "glass.png", "-o", out, "--mpp", "0.25"]
    else:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        args = ["segment", svs_slide, "-o", blocker / "sub"]
    result = CliRunner().invoke(main, [str(a) for a in args] + ["--scheduler", "inprocess", "--quiet"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    assert not (out / "nuclei.geojson.gz").exists() and not (out / "summary.json").exists()


def test_real_slide_segments(tmp_path):
    """The real Aperio slide (20x, upsampled to the model's 0.25 µm/px) end to end: nuclei and review annotations
    that QuPath imports, and no tile of this real slide flagged by input QC. With pathoseg-fast, the model that reads
    26 Mpx fastest: the default model reads this slide in tests/test_magnification.py."""
    slide = shared("slides/CMU-1-Small-Region.svs")
    result = run("segment", slide, "-o", tmp_path, "--scheduler", "inprocess", "--model", "pathoseg-fast", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["nuclei"] > 1000
    check_qupath_geojson(tmp_path / "nuclei.geojson.gz", 2220, 2967)  # every nucleus valid on QuPath's grid
    review = check_qupath_geojson(tmp_path / "review.geojson", 2220, 2967, ("annotation",))
    assert review and summary["quality"]["tiles"]["tiles_judged"] > 30
    assert not any(figures["tiles"] for figures in summary["quality"]["tiles"]["flagged"].values())
    check = summary["quality"]["mpp_check"]  # its nuclei fit its declared 0.499 µm/px: no warning
    assert 0.4 < check["estimated_mpp"] < 0.6 and check["warning"] is None and summary["quality"]["warnings"] == []


def test_demo_writes_a_slide_and_segments_it(tmp_path):
    result = run("demo", "-o", tmp_path, "--size", "1600x1200", "--scheduler", "inprocess", "--quiet")
    assert result.exit_code == 0, result.output
    assert open_slide(tmp_path / "demo.svs").vendor == "aperio"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["nuclei"] > 100 and f"{summary['nuclei']} nuclei" in result.output
    for name in ("nuclei.geojson.gz", "overlay.png", "report.html", "review.geojson", "summary.csv"):
        assert (tmp_path / name).is_file()


def nuclei_of(out_dir) -> list:
    with gzip.open(out_dir / "nuclei.geojson.gz", "rt") as handle:
        return sorted(
            (f["geometry"]["coordinates"], f["properties"]["classification"]["name"])
            for f in json.load(handle)["features"]
        )


def test_a_model_at_half_resolution_tiled_equals_one_piece(svs_slide, tmp_path):
    """A model at 0.5 µm/px: the 0.25 µm/px slide is read at half its size, and regions of 256 model px (with the
    default 128 px margins, 64 µm) give exactly the nuclei of one region holding the whole slide. The model is
    pathoseg-fast's network declared at 0.5 µm/px: what is tested is the geometry, for which it finds nuclei enough."""
    from pathoseg.models.weights import load_model, save_checkpoint

    fast = load_model("pathoseg-fast")
    fast.metadata.mpp = 0.5
    save_checkpoint(tmp_path / "half.pt", fast.network, fast.metadata)
    outputs = {}
    for region_px, margin_px in ((256, 128), (2048, 128)):
        config = tmp_path / f"regions-{region_px}.yaml"
        config.write_text(f"tiling: {{tile_px: 256, region_px: {region_px}, margin_px: {margin_px}}}\n")
        out = outputs[region_px] = tmp_path / f"out-{region_px}"
        result = run(
            "segment",
            svs_slide,
            "-o",
            out,
            "-c",
            config,
            "--model",
            tmp_path / "half.pt",
            "--scheduler",
            "inprocess",
            "--quiet",
        )
        assert result.exit_code == 0, result.output
    summaries = {size: json.loads((out / "summary.json").read_text()) for size, out in outputs.items()}
    assert summaries[256]["grid"]["model_width_px"] == 1300  # 2600 px at 0.25 µm -> 1300 at 0.5
    assert summaries[2048]["grid"]["regions"] == 1 and summaries[256]["grid"]["regions"] > 4
    half = nuclei_of(outputs[256])
    assert len(half) > 300 and half == nuclei_of(outputs[2048])
    check_qupath_geojson(outputs[256] / "nuclei.geojson.gz", 2600, 1800)

"""Input quality control: noise and unreadable inputs are called out, real tissue never is."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import shared
from PIL import Image
from qupath_rules import check_qupath_geojson
from scipy import ndimage
from shapely.geometry import box, shape
from skimage.color import rgb2hsv
from skimage.transform import downscale_local_mean

from pathoseg.cli import main
from pathoseg.config import load_config
from pathoseg.geometry import Box
from pathoseg.io.slide import open_slide
from pathoseg.measure.quality import (
    INK_HUE_DEG,
    INK_SATURATION,
    TILE_FLAGS,
    at_qc_mpp,
    brightest_channel,
    core_tiles,
    green_to_cyan,
    input_quality,
    region_quality,
    tile_flags,
    tile_quality,
)
from pathoseg.tiling.tissue import find_tissue, sample_tissue_tiles

REAL_INPUTS = [
    ("examples/he-tcga-tile.png", 0.25),
    ("examples/ihc-dab-roi.png", 0.25),
    ("examples/he-small.jpg", 0.5),
    ("examples/he-0.5mpp.ome.tif", None),
    ("slides/CMU-1-Small-Region.svs", None),
    ("slides/TCGA-CR-7395-01A-01-TS1-lowres.svs", 1.0),
    ("slides/Hamamatsu-test3-DAPI-2-387.ndpi", None),
    ("deepliif-ihc/train/images/lung_1.png", 0.25),
    ("deepliif-ihc/train/images/bladder_1.png", 0.25),
]


@pytest.mark.parametrize("relative, mpp", REAL_INPUTS)
@pytest.mark.parametrize("model_mpp", [0.25, 0.5])
def test_real_tissue_passes_every_check(relative, mpp, model_mpp):
    slide = open_slide(shared(relative), mpp)
    tissue, _ = find_tissue(slide, load_config())
    quality = input_quality(sample_tissue_tiles(slide, tissue, mpp=model_mpp), tissue.darkfield)
    assert quality["warnings"] == [], quality
    assert quality["neighbour_correlation"] > 0.8


def test_noise_is_called_out_in_the_summary_and_report(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3)).astype(np.uint8)
    Image.fromarray(noise).save(tmp_path / "noise.png")
    result = CliRunner().invoke(
        main,
        [
            "segment",
            str(tmp_path / "noise.png"),
            "--mpp",
            "0.25",
            "-o",
            str(tmp_path / "out"),
            "--scheduler",
            "inprocess",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    quality = json.loads((tmp_path / "out" / "summary.json").read_text())["quality"]
    assert quality["neighbour_correlation"] < 0.1
    assert len(quality["warnings"]) == 2 and all("noise" in warning for warning in quality["warnings"])
    assert quality["tiles"]["flagged"]["not_tissue"]["fraction"] == 1.0
    assert "these figures are not to be trusted" in result.output  # stderr, after the summary line
    assert "input check" in (tmp_path / "out" / "report.html").read_text()


def test_black_tissue_is_called_out():
    ramp = np.linspace(5, 25, 64)[None, :, None].repeat(64, 0).repeat(3, 2).astype(np.uint8)  # dark, smooth
    quality = input_quality([ramp])
    assert len(quality["warnings"]) == 1 and "nearly black" in quality["warnings"][0]
    partly_dark = ramp.copy()
    partly_dark[:, :40] = 180
    assert input_quality([partly_dark])["warnings"] == []
    assert input_quality([ramp], darkfield=True)["warnings"] == []  # fluorescence: the background is black


def test_an_image_too_small_for_nuclei_is_one_line(tmp_path):
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "tiny.png")
    result = CliRunner().invoke(
        main, ["segment", str(tmp_path / "tiny.png"), "--mpp", "0.25", "-o", str(tmp_path / "out"), "--quiet"]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {tmp_path / 'tiny.png'}: 2.5 µm across, too small to hold "
        "nuclei with their surroundings (at least 32 µm)"
    ]


def tiles_of(rgb: np.ndarray, mpp: float, tile_um: float = 128.0) -> dict[str, np.ndarray]:
    """The tile checks' flags over an image cut into tiles of ``tile_um`` (one tile when smaller)."""
    height, width = rgb.shape[:2]
    tile_px = min(int(round(tile_um / mpp)), height, width)
    core = Box(0, 0, width // tile_px * tile_px, height // tile_px * tile_px)
    rows = region_quality(rgb, Box(0, 0, width, height), core, tile_px, mpp)
    return tile_flags(rows[:, 2:], np.ones(len(rows), bool))


def manifest_images(relative: str):
    folder = shared(relative)
    for line in (folder / "MANIFEST.csv").read_text().splitlines()[1:]:
        image_id, mpp = line.split(",")[:2]
        yield np.asarray(Image.open(next((folder / "images").glob(f"{image_id}.*"))).convert("RGB")), float(mpp)


@pytest.mark.parametrize(
    "relative", ["monuseg/train", "consep/train", "nucls/test", "dsb2018-histo/train", "deepliif-ihc/train"]
)
def test_no_real_tile_is_flagged(relative):
    """Every image of a real data set, in tiles of 128 µm: no check flags any of them (the thresholds' margins are
    in the module docstring, from benchmarks/bench_quality.py)."""
    for rgb, mpp in manifest_images(relative):
        flagged = {name: int(mask.sum()) for name, mask in tiles_of(rgb, mpp).items() if mask.any()}
        assert not flagged


@pytest.mark.parametrize("height, width, mpp", [(512, 512, 0.25), (301, 199, 0.25), (97, 130, 0.17), (64, 48, 0.5)])
def test_tiles_are_brought_to_the_qc_resolution_as_scikit_image_would(height, width, mpp):
    """The block means of tile QC are downscale_local_mean's, bit for bit, partial edge blocks included."""
    rgb = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    factor = max(1, round(0.5 / mpp))
    expected = downscale_local_mean(rgb.astype(np.float32), (factor, factor, 1)).astype(np.float32)
    result = at_qc_mpp(rgb, mpp)
    assert result.dtype == np.float32 and np.array_equal(result, expected)


def test_ink_colours_are_hsv_hues_and_saturations():
    """green_to_cyan and brightest_channel agree with scikit-image's rgb2hsv (in float64) and max on every pixel:
    random colours, every pure hue, grey, and the block means tile QC feeds them (quarters and ninths of integers).
    Colours whose hue is a bound itself are outside the open range."""
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (20000, 3)).astype(np.float32)
    pure = [[255, 0, 0], [255, 255, 0], [0, 255, 0], [0, 255, 255], [0, 0, 255], [255, 0, 255], [128, 128, 128]]
    bounds = [[150, 200, 0], [0, 200, 240]]  # hue 75° and 190° exactly
    pixels = np.concatenate([colours, colours / 4, colours / 9, np.array(pure + bounds, np.float32)])
    hsv = rgb2hsv(pixels[None].astype(np.float64) / 255)[0]
    hue_deg = hsv[:, 0] * 360
    # ninths in float32 are not exact: a colour on a bound reads up to ~1e-5° either side of it
    on_bound = np.abs(hue_deg[:, None] - np.array(INK_HUE_DEG)).min(axis=1) < 1e-4
    expected = (hue_deg > INK_HUE_DEG[0]) & (hue_deg < INK_HUE_DEG[1]) & (hsv[:, 1] > INK_SATURATION)
    ink = green_to_cyan(pixels)
    assert 0.1 < expected.mean() < 0.5 and on_bound.mean() < 0.002
    assert np.array_equal(ink[~on_bound], expected[~on_bound]) and not ink[-2:].any()
    assert np.array_equal(brightest_channel(pixels), pixels.max(axis=1))


def test_region_quality_is_tile_quality_per_tile():
    """A region's QC rows are each tile's own ``tile_quality`` (of its own blocks), bit for bit, whether the core's
    blocks are averaged once (tiles on QC blocks) or per tile (0.17 µm/px: blocks of 3 px, tiles of 512 px), partial
    tiles included."""
    rgb = np.asarray(Image.open(shared("examples/he-tcga-tile.png")).convert("RGB"))
    window = Box(0, 0, 1024, 1024)
    for core, mpp in ((Box(0, 512, 1001, 511), 0.25), (Box(512, 0, 511, 999), 0.17), (Box(0, 0, 1024, 1024), 0.5)):
        rows = region_quality(rgb, window, core, 512, mpp)
        expected = [tile_quality(at_qc_mpp(rgb[tile.slices_in(window)], mpp)) for tile in core_tiles(core, 512)]
        assert len(rows) == len(expected) > 1
        assert np.array_equal(rows[:, 2:], np.array(expected, np.float32), equal_nan=True)


def blurred(rgb: np.ndarray, sigma_um: float, mpp: float) -> np.ndarray:
    return np.stack([ndimage.gaussian_filter(rgb[..., c], sigma_um / mpp) for c in range(3)], axis=2)


def green_ink(rgb: np.ndarray, columns: slice = slice(None)) -> np.ndarray:
    marked = rgb.copy()
    marked[:, columns] = (marked[:, columns] * np.array([0.35, 0.75, 0.5])).astype(np.uint8)
    return marked


def folded(rgb: np.ndarray, layers: float) -> np.ndarray:
    return (255 * (np.clip(rgb, 1, 255) / 255.0) ** layers).astype(np.uint8)


DEGRADED = {
    "blur": lambda rgb, mpp: blurred(rgb, 2.0, mpp),
    "ink": lambda rgb, mpp: green_ink(rgb),
    "dark": lambda rgb, mpp: folded(rgb, 3.0),
    "not_tissue": lambda rgb, mpp: np.random.default_rng(0).integers(0, 256, rgb.shape).astype(np.uint8),
}
MIN_SHARE = {"blur": 0.9, "ink": 0.8, "dark": 0.25, "not_tissue": 1.0}  # a fold is caught only when darker than
# any real tile: OD x3 flags ~40% (benchmarks/bench_quality.py)


@pytest.mark.parametrize("check", TILE_FLAGS)
def test_degraded_tiles_are_flagged_by_their_check(check):
    """Real MoNuSeg tiles blurred by 2 µm, covered in green marker, folded (three layers) or replaced by noise."""
    tiles = flagged = 0
    for rgb, mpp in list(manifest_images("monuseg/train"))[:10]:
        flags = tiles_of(DEGRADED[check](rgb, mpp), mpp)
        tiles += flags[check].size
        flagged += int(flags[check].sum())
        assert not any(flags[other].any() for other in TILE_FLAGS if other not in (check, "dark"))
    assert flagged / tiles >= MIN_SHARE[check]


def test_blur_and_ink_are_mapped_in_the_summary_review_file_and_report(tmp_path):
    """Two MoNuSeg images side by side, the left out of focus and the right's far half under green marker: the
    flagged tiles are where the faults are, as QuPath annotations that import cleanly, and on the QC map."""
    images = [rgb[:1000, :1000] for rgb, _ in list(manifest_images("monuseg/train"))[:2]]
    image = np.concatenate([blurred(images[0], 2.0, 0.25), green_ink(images[1], slice(500, None))], axis=1)
    Image.fromarray(image).save(tmp_path / "faults.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "segment",
            str(tmp_path / "faults.png"),
            "--mpp",
            "0.25",
            "-o",
            str(out),
            "--scheduler",
            "inprocess",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    quality = json.loads((out / "summary.json").read_text())["quality"]
    flagged = quality["tiles"]["flagged"]
    assert flagged["blur"]["tiles"] >= 2 and flagged["ink"]["tiles"] >= 2
    assert flagged["dark"]["tiles"] == flagged["not_tissue"]["tiles"] == 0
    assert any("out of focus" in warning for warning in quality["warnings"])
    assert any("pen ink" in warning for warning in quality["warnings"])
    features = check_qupath_geojson(out / "review.geojson", 2000, 1000, ("annotation",))
    areas = {f["properties"]["classification"]["name"]: shape(f["geometry"]) for f in features}
    assert areas["QC: Out of focus"].intersection(box(0, 0, 1000, 1000)).area > 0.9 * areas["QC: Out of focus"].area
    assert areas["QC: Pen ink"].intersection(box(1500, 0, 2000, 1000)).area > 0.5 * areas["QC: Pen ink"].area
    assert Image.open(out / "quality.png").size[0] > 0
    report = (out / "report.html").read_text()
    assert "Input quality" in report and "out of focus" in report and "input quality map" in report


@pytest.mark.parametrize("grey", [255, 0])
def test_a_blank_or_black_image_is_refused_in_one_line(tmp_path, grey):
    """A 400 px image of glass or of black: no confident density, one line naming the file, exit 2."""
    path = tmp_path / f"blank-{grey}.png"
    Image.fromarray(np.full((400, 400, 3), grey, np.uint8)).save(path)
    result = CliRunner().invoke(main, ["segment", str(path), "--mpp", "0.25", "-o", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {path}: no tissue found"]
    assert not (tmp_path / "out" / "summary.json").exists()

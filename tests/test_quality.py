"""Input quality control: noise and unreadable inputs are called out, real tissue never is."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from pathoseg.cli import main
from pathoseg.config import load_config
from pathoseg.io.slide import open_slide
from pathoseg.measure.quality import input_quality
from pathoseg.pipeline import find_tissue, sample_tissue_tiles

from conftest import shared

REAL_INPUTS = [("examples/he-tcga-tile.png", 0.25), ("examples/ihc-dab-roi.png", 0.25), ("examples/he-small.jpg", 0.5),
               ("examples/he-0.5mpp.ome.tif", None), ("slides/CMU-1-Small-Region.svs", None),
               ("slides/TCGA-CR-7395-01A-01-TS1-lowres.svs", 1.0), ("slides/Hamamatsu-test3-DAPI-2-387.ndpi", None),
               ("deepliif-ihc/train/images/lung_1.png", 0.25), ("deepliif-ihc/train/images/bladder_1.png", 0.25)]


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
    result = CliRunner().invoke(main, ["segment", str(tmp_path / "noise.png"), "--mpp", "0.25", "-o",
                                       str(tmp_path / "out"), "--scheduler", "inprocess", "--quiet"])
    assert result.exit_code == 0, result.output
    quality = json.loads((tmp_path / "out" / "summary.json").read_text())["quality"]
    assert quality["neighbour_correlation"] < 0.1
    assert len(quality["warnings"]) == 1 and "noise" in quality["warnings"][0]
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
    result = CliRunner().invoke(main, ["segment", str(tmp_path / "tiny.png"), "--mpp", "0.25", "-o",
                                       str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {tmp_path / 'tiny.png'}: 2.5 µm across, too small to hold "
                                                  "nuclei with their surroundings (at least 32 µm)"]

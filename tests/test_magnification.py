"""The magnification check: the pixel size the nuclei suggest, per class against the model's own reference areas,
and the warning when it is far from the declared one."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from conftest import shared

from pathoseg.cli import main
from pathoseg.measure.magnification import MIN_NUCLEI, area_ratio, mpp_check, reference_areas

REFERENCE = reference_areas("pathoseg-light")


def nuclei_like_the_reference(counts: dict[str, int], scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Areas spread around each class's reference median (times ``scale``), and their class names."""
    rng = np.random.default_rng(0)
    areas, names = [], []
    for name, count in counts.items():
        areas.append(REFERENCE[name] * scale * np.exp(rng.normal(0, 0.3, count)))
        names += [name] * count
    return np.concatenate(areas), np.array(names)


def test_a_slide_at_its_true_pixel_size_reads_as_such_whatever_its_tissue():
    for counts in ({"epithelial": 400, "inflammatory": 50}, {"spindle": 300, "inflammatory": 300}):
        areas, names = nuclei_like_the_reference(counts)
        ratio, used = area_ratio(areas, names, REFERENCE)
        assert abs(ratio - 1) < 0.1 and used == sum(counts.values())
        assert mpp_check(areas, names, 0.25, "pathoseg-light", 1.8)["warning"] is None


def test_nuclei_half_their_size_put_the_pixel_size_at_twice_the_declared_one():
    areas, names = nuclei_like_the_reference({"epithelial": 300, "spindle": 200}, scale=0.5)
    check = mpp_check(areas, names, 0.25, "pathoseg-light", 1.8)
    assert abs(check["ratio"] - 2) < 0.2 and abs(check["estimated_mpp"] - 0.5) < 0.05
    assert "0.25 µm/px" in check["warning"] and "--mpp" in check["warning"]
    larger = mpp_check(*nuclei_like_the_reference({"epithelial": 300}, scale=2.5), 0.5, "pathoseg-light", 1.8)
    assert larger["ratio"] < 0.5 and larger["warning"] is not None


def test_too_few_nuclei_or_classes_without_a_reference_give_no_estimate():
    areas, names = nuclei_like_the_reference({"epithelial": MIN_NUCLEI - 1})
    assert np.isnan(area_ratio(areas, names, REFERENCE)[0])
    check = mpp_check(areas, np.full(len(areas), "other"), 0.25, "pathoseg-light", 1.8)
    assert check["estimated_mpp"] is None and check["warning"] is None


def test_a_20x_slide_declared_as_40x_is_called_out(tmp_path):
    """CMU-1 is a real 20x scan (0.499 µm/px). Declared at 0.25 µm/px (a 40x label on a 20x scan), its nuclei
    look half their size: the run warns, in the summary, the report and its last line. (At its own pixel size it
    does not: tests/test_pipeline.py::test_real_slide_segments.)"""
    slide = shared("slides/CMU-1-Small-Region.svs")
    result = CliRunner().invoke(
        main,
        ["segment", str(slide), "--mpp", "0.25", "-o", str(tmp_path), "--scheduler", "inprocess", "--quiet"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    check = summary["quality"]["mpp_check"]
    assert check["declared_mpp"] == 0.25 and 0.42 < check["estimated_mpp"] < 0.7, check
    assert check["warning"] in summary["quality"]["warnings"]
    assert "look like a scan at about" in result.output  # the command's last line
    assert "the nuclei suggest" in (tmp_path / "report.html").read_text()

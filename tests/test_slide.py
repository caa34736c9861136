"""Opening slides and images with real OpenSlide; clear errors for bad input."""

import numpy as np
import pytest

from pathoseg.io.slide import SlideError, open_slide

from conftest import DICOM_SERIES_UID, copy_dicom_slide, shared


def test_aperio_svs(svs_slide):
    slide = open_slide(svs_slide)
    assert slide.vendor == "aperio"
    assert slide.mpp == pytest.approx(0.25)
    assert slide.objective_power == 40
    assert len(slide.level_dimensions) == 3
    assert slide.level_for_mpp(0.25) == 0 and slide.level_for_mpp(0.5) == 1
    region = slide.read_region(100, 100, 0, 64, 32)
    assert region.shape == (32, 64, 3) and region.dtype == np.uint8


def test_generic_tiff(tiff_slide):
    slide = open_slide(tiff_slide)
    assert slide.vendor == "generic-tiff"
    assert slide.mpp == pytest.approx(0.5)


def test_real_aperio_slide():
    slide = open_slide(shared("slides/CMU-1-Small-Region.svs"))
    assert slide.vendor == "aperio"
    assert slide.mpp == pytest.approx(0.499, abs=1e-3)
    assert slide.dimensions == (2220, 2967)


def test_ome_tiff_pixel_size_from_metadata():
    slide = open_slide(shared("examples/he-0.5mpp.ome.tif"))
    assert slide.mpp == pytest.approx(0.5, abs=1e-3)
    assert slide.mpp_source == "TIFF metadata"


def test_png_needs_mpp():
    path = shared("examples/he-tcga-tile.png")
    assert open_slide(path).mpp is None
    assert open_slide(path, mpp=0.25).mpp == 0.25


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "absent.svs", "no such file"),
    (lambda tmp: (tmp / "notes.svs").write_text("hello") and tmp / "notes.svs", "not a readable slide"),
    (lambda tmp: tmp, "is a folder"),
])
def test_bad_input_names_file_and_problem(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(SlideError, match=message) as error:
        open_slide(path)
    assert str(path) in str(error.value)
    assert "\n" not in str(error.value)


def test_truncated_tiff_is_refused(svs_slide, tmp_path):
    truncated = tmp_path / "truncated.svs"
    data = svs_slide.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(SlideError, match="truncated.svs"):
        slide = open_slide(truncated)
        width, height = slide.dimensions
        slide.read_region(0, 0, 0, width, height)


def test_dicom_slide_opens_from_its_folder():
    """A DICOM slide is a series of files (here one per level); the folder opens as that one slide."""
    slide = open_slide(shared("slides/CMU-1-Small-Region-dicom"))
    assert slide.vendor == "dicom" and slide.path.suffix == ".dcm"
    assert slide.mpp == pytest.approx(0.499, abs=1e-3)
    assert slide.dimensions == (2220, 2967) and len(slide.level_dimensions) == 12
    svs = open_slide(shared("slides/CMU-1-Small-Region.svs"))
    difference = slide.read_region(600, 900, 0, 512, 512).astype(int) - svs.read_region(600, 900, 0, 512, 512)
    assert np.abs(difference).mean() < 5  # the same pixels, JPEG-encoded again


def test_folder_of_two_dicom_slides_names_the_problem(tmp_path):
    source = shared("slides/CMU-1-Small-Region-dicom")
    folder = copy_dicom_slide(source, tmp_path / "two")
    copy_dicom_slide(source, folder, DICOM_SERIES_UID[:-3] + b"777")
    with pytest.raises(SlideError, match="holds 2 DICOM slides; give one file of the slide") as error:
        open_slide(folder)
    assert str(folder) in str(error.value)
    assert open_slide(folder / "level-0-frames-0-30.dcm").dimensions == (2220, 2967)

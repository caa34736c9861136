"""Opening slides and images with real OpenSlide; clear errors for bad input."""

import imageio.v3 as iio
import numpy as np
import openslide
import pytest
import tifffile
from conftest import DICOM_SERIES_UID, copy_dicom_slide, shared

from pathoseg.io.slide import SlideError, open_slide
from pathoseg.synthetic import write_synthetic_slide


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


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: tmp / "absent.svs", "no such file"),
        (lambda tmp: (tmp / "notes.svs").write_text("hello") and tmp / "notes.svs", "not a readable slide"),
        (lambda tmp: tmp, "is a folder"),
    ],
)
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


def _same_regions(slide, other, rng, reads=60) -> bool:
    """Random level-aligned reads (some past the edges) give the same pixels from both slides."""
    width, height = slide.dimensions
    for _ in range(reads):
        level = int(rng.integers(0, len(slide.level_dimensions)))
        downsample = round(slide.level_downsamples[level])
        x, y = (int(v) * downsample for v in rng.integers(-40, [width // downsample, height // downsample]))
        size = rng.integers(1, 400, 2)
        if not np.array_equal(slide.read_region(x, y, level, *size), other.read_region(x, y, level, *size)):
            return False
    return True


def test_ome_tiff_pyramid_gives_every_level(tmp_path):
    """OpenSlide reads an OME-TIFF's SubIFD pyramid as one level; pathoseg reads all of it, pixel for pixel as
    OpenSlide reads the same tiles in an SVS."""
    svs = write_synthetic_slide(tmp_path / "s.svs", 3000, 2000, kind="svs", tile_px=256, min_level_px=256)
    ome = write_synthetic_slide(tmp_path / "s.ome.tif", 3000, 2000, kind="ome-tiff", tile_px=256, min_level_px=256)
    with openslide.OpenSlide(str(ome)) as native:
        assert native.level_count == 1
    slide, reference = open_slide(ome), open_slide(svs)
    assert slide.vendor == "ome-tiff"
    assert slide.mpp == pytest.approx(0.25) and slide.mpp_source == "TIFF metadata"
    assert slide.level_dimensions == reference.level_dimensions and len(slide.level_dimensions) == 4
    assert slide.level_downsamples == pytest.approx(reference.level_downsamples)
    assert slide.level_for_mpp(1.0) == 2
    assert _same_regions(slide, reference, np.random.default_rng(0))
    thumbnail, downsample = slide.thumbnail(600)
    reference_thumbnail, reference_downsample = reference.thumbnail(600)
    assert downsample == reference_downsample and np.array_equal(thumbnail, reference_thumbnail)


@pytest.mark.parametrize("rows_per_strip", [16, 1024])
def test_strip_tiff_reads_like_the_image(tmp_path, monkeypatch, rows_per_strip):
    """A TIFF of strips (ImageJ, image editors) is read strip by strip, or decoded once where its strips are large."""
    monkeypatch.setattr("pathoseg.io.tiff.MAX_LAZY_STRIP_BYTES", 1 * 2**20)
    rgb = iio.imread(shared("examples/he-tcga-tile.png"))[..., :3]
    path = tmp_path / "strips.tif"
    tifffile.imwrite(
        path,
        rgb,
        photometric="rgb",
        rowsperstrip=rows_per_strip,
        compression="zlib",
        resolution=(1e4 / 0.25, 1e4 / 0.25),
        resolutionunit="CENTIMETER",
    )
    assert openslide.OpenSlide.detect_format(str(path)) is None  # OpenSlide would hand it to PIL, whole
    slide = open_slide(path)
    assert slide.vendor == "tiff" and slide.mpp == pytest.approx(0.25)
    assert np.array_equal(slide.read_region(0, 0, 0, 1024, 1024), rgb)
    region = slide.read_region(1000, -5, 0, 40, 30)  # past the corner: white, as OpenSlide reads it
    assert np.array_equal(region[5:, :24], rgb[:25, 1000:])
    assert (region[:5] == 255).all() and (region[:, 24:] == 255).all()


def test_grey_and_planar_tiffs(tmp_path):
    rgb = iio.imread(shared("examples/he-small.jpg"))[..., :3]
    grey, planar = tmp_path / "grey.tif", tmp_path / "planar.tif"
    tifffile.imwrite(grey, rgb[..., 1])
    tifffile.imwrite(planar, np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    assert np.array_equal(open_slide(planar, mpp=0.5).read_region(0, 0, 0, 300, 200), rgb[:200, :300])
    assert np.array_equal(open_slide(grey, mpp=0.5).read_region(0, 0, 0, 30, 20), np.repeat(rgb[:20, :30, 1:2], 3, 2))


@pytest.mark.parametrize(
    "name, shape, options",
    [
        ("channels.ome.tif", (5, 64, 64), {"metadata": {"axes": "CYX"}}),
        ("samples.tif", (64, 64, 6), {"photometric": "rgb", "planarconfig": "contig"}),
    ],
)
def test_multichannel_tiff_is_refused_in_one_line(tmp_path, name, shape, options):
    path = tmp_path / name
    tifffile.imwrite(path, np.zeros(shape, np.uint8), **options)
    with pytest.raises(SlideError, match=rf"{name}: image axes [CSYX]+ .*not an RGB or grey image"):
        open_slide(path)


def test_oversized_plain_image_names_the_fix(monkeypatch):
    monkeypatch.setattr("pathoseg.io.slide.MAX_PLAIN_IMAGE_PX", 100_000)
    path = shared("examples/he-small.jpg")
    with pytest.raises(
        SlideError, match="500x300 px is too large to decode as a plain JPEG image; save it as a tiled pyramidal TIFF"
    ) as error:
        open_slide(path)
    assert str(path) in str(error.value)


def test_thumbnail_read_in_bands_is_the_whole_read(monkeypatch):
    slide = open_slide(shared("slides/CMU-1-Small-Region.svs"))
    whole = slide.thumbnail(500)
    monkeypatch.setattr("pathoseg.io.slide.THUMBNAIL_BAND_PX", 50)
    banded = slide.thumbnail(500)
    assert banded[1] == whole[1] and np.array_equal(banded[0], whole[0])


def test_ome_tiff_with_label_and_macro_images_opens_the_slide(tmp_path):
    """An OME-TIFF converted from a slide also holds its label (here first, with a pixel size of its own): the
    slide is the largest image, with its own pixel size."""
    rgb = iio.imread(shared("examples/he-tcga-tile.png"))[..., :3]
    path = tmp_path / "converted.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as writer:
        writer.write(
            np.full((200, 300, 3), 220, np.uint8),
            photometric="rgb",
            metadata={"axes": "YXS", "Name": "label", "PhysicalSizeX": 40.0, "PhysicalSizeY": 40.0},
        )
        writer.write(
            rgb,
            photometric="rgb",
            tile=(256, 256),
            subifds=1,
            metadata={"axes": "YXS", "Name": "slide", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25},
        )
        writer.write(rgb[::2, ::2], photometric="rgb", tile=(256, 256), subfiletype=1)
    slide = open_slide(path)
    assert slide.dimensions == (1024, 1024) and len(slide.level_dimensions) == 2
    assert slide.mpp == pytest.approx(0.25) and slide.mpp_source == "TIFF metadata"
    assert np.array_equal(slide.read_region(0, 0, 0, 1024, 1024), rgb)

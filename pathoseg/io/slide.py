"""Open anything OpenSlide reads, and plain PNG/TIFF/JPEG images, behind one small interface."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
import shapely
from PIL import Image

from pathoseg.errors import InputError
from pathoseg.geometry import Box
from pathoseg.io.tiff import TiffReadError, TiffSlide, tiff_levels, tiff_mpp

# Pixel sizes read from plain-image metadata are believed only in this range (72/96 dpi defaults are not mpp).
PLAUSIBLE_MPP = (0.05, 20.0)
# A PNG or JPEG is decoded whole (by every process that reads it): past this size, a tiled TIFF is the way.
MAX_PLAIN_IMAGE_PX = 1_000_000_000
# Rows of a level read at a time for a thumbnail: a slide without a pyramid never sits whole in memory.
THUMBNAIL_BAND_PX = 4096
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")


class SlideError(InputError):
    """A slide that cannot be used; the message names the file and the problem."""


@dataclass
class Slide:
    """An open slide: level geometry, pixel size, bounds, and region reads.

    ``mpp`` is microns per level-0 pixel (None when unknown); ``bounds`` is the level-0 box holding image data.
    """

    path: Path
    handle: openslide.AbstractSlide
    mpp: float | None
    mpp_source: str

    @property
    def required_mpp(self) -> float:
        """``mpp``, or SlideError where the file carries no pixel size and none was given."""
        if self.mpp is None:
            raise SlideError(f"{self.path}: the file carries no pixel size; give it with --mpp")
        return self.mpp

    @property
    def vendor(self) -> str:
        """The format OpenSlide (or the TIFF reader) names, ``image`` for plain images."""
        return self.handle.properties.get(openslide.PROPERTY_NAME_VENDOR) or "image"

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level 0's (width, height)."""
        return self.handle.dimensions

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """Each level's (width, height)."""
        return self.handle.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Each level's downsample from level 0."""
        return self.handle.level_downsamples

    @property
    def decodes_whole(self) -> bool:
        """Whether the first read decodes the whole image into memory (a PNG or JPEG, a TIFF of a few huge strips),
        so that every process reading it holds all of it."""
        return isinstance(self.handle, openslide.ImageSlide) or getattr(self.handle, "decodes_whole", False)

    @property
    def objective_power(self) -> float | None:
        """The scanner's objective magnification, where the file says it."""
        value = self.handle.properties.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)
        return float(value) if value else None

    @property
    def bounds(self) -> Box:
        """The level-0 box that holds image data (the whole slide where the file gives no bounds)."""
        props = self.handle.properties
        width, height = self.dimensions
        if openslide.PROPERTY_NAME_BOUNDS_WIDTH in props:
            return Box(
                int(props.get(openslide.PROPERTY_NAME_BOUNDS_X, 0)),
                int(props.get(openslide.PROPERTY_NAME_BOUNDS_Y, 0)),
                int(props[openslide.PROPERTY_NAME_BOUNDS_WIDTH]),
                int(props[openslide.PROPERTY_NAME_BOUNDS_HEIGHT]),
            )
        return Box(0, 0, width, height)

    def level_for_mpp(self, target_mpp: float) -> int:
        """The coarsest level whose pixels are still at least as fine as ``target_mpp``."""
        best = 0
        for level, downsample in enumerate(self.level_downsamples):
            if self.required_mpp * downsample <= target_mpp * 1.01:
                best = level
        return best

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """(height, width, 3) uint8 RGB at ``level``, top-left at level-0 (x, y); transparent areas white."""
        try:
            rgba = self.handle.read_region((int(x), int(y)), level, (int(width), int(height)))
        except openslide.OpenSlideError as error:
            raise SlideError(f"{self.path}: cannot read pixels ({error})") from None
        pixels = np.asarray(rgba)
        if (pixels[..., 3] == 255).all():  # opaque, as nearly every tile is: compositing would change nothing
            return np.ascontiguousarray(pixels[..., :3])
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))

    def thumbnail(self, max_side_px: int) -> tuple[np.ndarray, float]:
        """RGB thumbnail of the bounded region and its level-0 pixels per thumbnail pixel.

        The level read is box-reduced band by band, so memory stays bounded by a band even where the slide has no
        pyramid (a flat TIFF, a large PNG).
        """
        bounds = self.bounds
        downsample = max(bounds.width, bounds.height) / max_side_px
        level = self.handle.get_best_level_for_downsample(max(downsample, 1.0))
        level_downsample = self.level_downsamples[level]
        width, height = (int(np.ceil(side / level_downsample)) for side in (bounds.width, bounds.height))
        factor = max(1, int(downsample / level_downsample))
        band_px = factor * max(1, THUMBNAIL_BAND_PX // factor)
        bands = [
            Image.fromarray(
                self.read_region(
                    bounds.x, bounds.y + round(top * level_downsample), level, width, min(band_px, height - top)
                )
            ).reduce(factor)
            for top in range(0, height, band_px)
        ]
        image = Image.fromarray(np.concatenate([np.asarray(band) for band in bands]))
        if downsample > level_downsample:
            scale = level_downsample / downsample
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            if image.size != size:
                image = image.resize(size, Image.Resampling.BOX)
        return np.asarray(image), bounds.width / image.width

    @property
    def bounds_polygon(self) -> shapely.Polygon:
        """The level-0 bounds as a polygon."""
        bounds = self.bounds
        return shapely.box(bounds.x, bounds.y, bounds.x1, bounds.y1)

    def close(self) -> None:
        """Close the file."""
        self.handle.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _mpp_from_openslide(handle: openslide.AbstractSlide) -> float | None:
    value = handle.properties.get(openslide.PROPERTY_NAME_MPP_X)
    return float(value) if value else None


@contextmanager
def _plain_image_limit() -> Iterator[None]:
    """PIL's guard against decompression bombs (meant for untrusted uploads) raised to ``MAX_PLAIN_IMAGE_PX`` while
    a file the user named is opened, and put back after: the rest of the process keeps PIL's own limit."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PLAIN_IMAGE_PX
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _mpp_from_image_dpi(path: Path) -> float | None:
    try:
        with _plain_image_limit(), Image.open(path) as image:
            dpi = image.info.get("dpi")
    except OSError:
        return None
    return 25400.0 / float(dpi[0]) if dpi and dpi[0] else None


def _plausible(mpp: float | None) -> float | None:
    return mpp if mpp is not None and PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1] else None


def dicom_series(files: list[Path]) -> dict[str, Path]:
    """The whole-slide DICOM series among ``files``: SeriesInstanceUID -> its first file (in the given order) that
    OpenSlide opens. A DICOM slide is a series of files, one or more per level; OpenSlide reads all of it from any
    one of them (it finds the rest in the same folder). Files it cannot open are left out."""
    series: dict[str, Path] = {}
    for path in files:
        try:
            with openslide.OpenSlide(str(path)) as handle:
                uid = handle.properties.get("dicom.SeriesInstanceUID", str(path))
        except (openslide.OpenSlideError, OSError):
            continue
        series.setdefault(uid, path)
    return series


def _dicom_slide_file(folder: Path) -> Path:
    """The file to open for the one DICOM slide in ``folder``; SlideError where it holds none or several."""
    series = dicom_series(sorted(p for p in folder.iterdir() if p.suffix.lower() == ".dcm"))
    if not series:
        raise SlideError(f"{folder}: is a folder, not a slide (no whole-slide DICOM series in it)")
    if len(series) > 1:
        raise SlideError(f"{folder}: holds {len(series)} DICOM slides; give one file of the slide to segment")
    return next(iter(series.values()))


def _openslide_levels(path: Path) -> int:
    with openslide.OpenSlide(str(path)) as handle:
        return handle.level_count


def _refuse_oversized_image(path: Path) -> None:
    """SlideError for a plain image past ``MAX_PLAIN_IMAGE_PX``; reads only its header."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's warnings about a file that is no image: the caller reports it once
        with _plain_image_limit(), Image.open(path) as image:
            width, height, kind = image.width, image.height, image.format
    if width * height > MAX_PLAIN_IMAGE_PX:
        raise SlideError(
            f"{path}: {width}x{height} px is too large to decode as a plain {kind} image; save it as "
            f"a tiled pyramidal TIFF (e.g. vips tiffsave IN OUT.tif --tile --pyramid --compression jpeg)"
        )


def _open_handle(path: Path) -> openslide.AbstractSlide:
    """OpenSlide for the formats it knows; tifffile for TIFFs it reads as fewer levels than the file has, or not at
    all (see ``io.tiff``); PIL (OpenSlide's ImageSlide) for other plain images, up to ``MAX_PLAIN_IMAGE_PX``."""
    slide_format = openslide.OpenSlide.detect_format(str(path))
    if slide_format in (None, "generic-tiff") and path.suffix.lower() in TIFF_SUFFIXES:
        levels = tiff_levels(path)
        if levels and (slide_format is None or levels > _openslide_levels(path)):
            try:
                return TiffSlide(path)
            except TiffReadError as error:
                raise SlideError(f"{path}: {error}") from None
    if slide_format is None:
        _refuse_oversized_image(path)
    with _plain_image_limit():
        return openslide.open_slide(str(path))


def open_slide(path: str | Path, mpp: float | None = None) -> Slide:
    """Open a whole-slide image or a plain image.

    Parameters
    ----------
    path : slide or image file, or a folder holding one DICOM slide (its series of files).
    mpp : microns per level-0 pixel; overrides the file's own (required when the file has none).

    Raises
    ------
    SlideError : missing file, unreadable or corrupt file.
    """
    path = Path(path)
    if not path.exists():
        raise SlideError(f"{path}: no such file")
    if path.is_dir():
        path = _dicom_slide_file(path)
    try:
        handle = _open_handle(path)
        handle.read_region((0, 0), handle.level_count - 1, (1, 1))  # fail now on unreadable pixel data
    except SlideError:
        raise
    except (openslide.OpenSlideError, OSError, ValueError) as error:
        reason = str(error).split(": ")[-1] or error.__class__.__name__
        raise SlideError(f"{path}: not a readable slide or image ({reason})") from None
    if mpp is not None:
        return Slide(path, handle, float(mpp), "--mpp")
    for source, reader in (
        ("slide properties", lambda: _mpp_from_openslide(handle)),
        ("TIFF metadata", lambda: tiff_mpp(path) if path.suffix.lower() in TIFF_SUFFIXES else None),
        ("image dpi", lambda: _mpp_from_image_dpi(path)),
    ):
        found = _plausible(reader())
        if found:
            return Slide(path, handle, found, source)
    return Slide(path, handle, None, "unknown")

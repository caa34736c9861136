"""TIFFs OpenSlide cannot read as slides, read through tifffile behind OpenSlide's interface.

OpenSlide reads an OME-TIFF pyramid (levels in SubIFDs, as QuPath, bfconvert and tifffile write them) as its full
resolution level only, and a TIFF of strips (ImageJ, most image editors) not at all: it falls back to decoding the
whole image with PIL. This reader gives such files their levels and reads regions tile by tile (strip by strip).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import openslide
import tifffile
import zarr
from PIL import Image

from pathoseg.errors import InputError

# A level stored in strips larger than this is decoded once and kept, instead of once per region read.
MAX_LAZY_STRIP_BYTES = 64 * 2**20


class TiffReadError(InputError):
    """A TIFF whose pixels are not an RGB or grey image this reader can give (the message says why)."""


def main_series(tiff: tifffile.TiffFile) -> tifffile.TiffPageSeries:
    """The slide among a TIFF's images: the largest (an OME-TIFF converted from a slide also holds its label and
    macro images)."""
    return max(tiff.series, key=lambda series: int(np.prod(series.shape)))


def tiff_levels(path: str | Path) -> int:
    """Resolution levels of the slide in a TIFF (``main_series``; SubIFD and multi-page pyramids alike); 0 if
    unreadable."""
    quiet = logging.getLogger("tifffile")
    level, quiet.level = quiet.level, logging.ERROR + 1  # a file that is no TIFF is reported once, by the caller
    try:
        with tifffile.TiffFile(path) as tiff:
            return len(main_series(tiff).levels) if tiff.series else 0
    except (tifffile.TiffFileError, OSError, ValueError, IndexError):
        return 0
    finally:
        quiet.level = level


def _ome_pixel_size_um(ome_xml: str, width: int, height: int) -> float | None:
    """PhysicalSizeX (µm) of the OME image whose pixels are ``width`` x ``height``."""
    for pixels in ElementTree.fromstring(ome_xml).iter():
        if (
            pixels.tag.endswith("}Pixels")
            and pixels.get("SizeX") == str(width)
            and pixels.get("SizeY") == str(height)
            and pixels.get("PhysicalSizeX")
            and pixels.get("PhysicalSizeXUnit", "µm") in ("µm", "um")
        ):
            return float(pixels.attrib["PhysicalSizeX"])
    return None


def tiff_mpp(path: str | Path) -> float | None:
    """Microns per pixel of the slide in a TIFF (``main_series``): its OME PhysicalSizeX, else its resolution tags
    (centimetre or inch units); None where the file says neither."""
    try:
        with tifffile.TiffFile(path) as tiff:
            series = main_series(tiff)
            width, height = _width_height(series.shape, _yxs(series, series.axes))
            if tiff.is_ome and tiff.ome_metadata:
                ome_mpp = _ome_pixel_size_um(tiff.ome_metadata, width, height)
                if ome_mpp:
                    return ome_mpp
            tags = series.keyframe.tags
            if "XResolution" in tags and "ResolutionUnit" in tags:
                numerator, denominator = tags["XResolution"].value
                microns_per_unit = {2: 25400.0, 3: 10000.0}.get(int(tags["ResolutionUnit"].value))
                if microns_per_unit and numerator:
                    return microns_per_unit * denominator / numerator
    except (tifffile.TiffFileError, OSError, ValueError, KeyError, ElementTree.ParseError):
        return None
    return None


def _yxs(array: Any, axes: str) -> tuple[int, int, int] | None:
    """Index order that turns an array of ``axes`` into (Y, X[, S]) (None: it is already); TiffReadError for
    anything but a grey, grey + alpha, RGB or RGBA image."""
    if axes == "YX" or (axes == "YXS" and array.shape[-1] <= 4):
        return None
    if axes in ("SYX", "CYX") and array.shape[0] in (3, 4):
        return (1, 2, 0)
    raise TiffReadError(f"image axes {axes} with shape {tuple(array.shape)}: not an RGB or grey image")


def _width_height(shape: tuple[int, ...], order: tuple[int, int, int] | None) -> tuple[int, int]:
    """(width, height) of an image of ``shape`` whose axes ``order`` (``_yxs``) puts in (Y, X[, S])."""
    shape = shape if order is None else tuple(shape[i] for i in order)
    return int(shape[1]), int(shape[0])


class TiffSlide(openslide.AbstractSlide):
    """The slide of a TIFF (``main_series``) and its reduced levels, as OpenSlide's ``AbstractSlide``.

    ``properties`` holds only the vendor (``ome-tiff`` or ``tiff``; the pixel size is read from the file's metadata
    as for any TIFF). Regions outside the image read as transparent, as in OpenSlide.
    """

    def __init__(self, path: str | Path):
        self._tiff = tifffile.TiffFile(path)
        try:
            self._read_structure()
        except TiffReadError:
            self._tiff.close()
            raise

    def _read_structure(self) -> None:
        series = main_series(self._tiff)
        self._levels = [zarr.open_array(series.aszarr(level=index), mode="r") for index in range(len(series.levels))]
        self._order = _yxs(self._levels[0], series.axes)
        if self._levels[0].dtype not in (np.uint8, np.uint16):
            raise TiffReadError(f"{self._levels[0].dtype} pixels: not 8- or 16-bit")
        pages = [level.keyframe for level in series.levels]
        self._in_memory: dict[int, np.ndarray | None] = {
            index: None
            for index, page in enumerate(pages)
            if not page.is_tiled
            and page.rowsperstrip * page.imagewidth * page.samplesperpixel * page.bitspersample // 8
            > MAX_LAZY_STRIP_BYTES
        }
        self._dimensions = tuple(_width_height(level.shape, self._order) for level in self._levels)
        self._properties = {openslide.PROPERTY_NAME_VENDOR: "ome-tiff" if self._tiff.is_ome else "tiff"}

    @property
    def decodes_whole(self) -> bool:
        """Whether reading any region decodes the whole full-resolution level (stored in a few large strips)."""
        return 0 in self._in_memory

    @classmethod
    def detect_format(cls, filename: str | bytes | os.PathLike[Any]) -> str | None:
        """``tiff`` for a TIFF this reader can read, else None."""
        return "tiff" if tiff_levels(os.fsdecode(filename)) else None

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self._levels)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """Each level's (width, height)."""
        return self._dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Each level's downsample from level 0."""
        width, height = self._dimensions[0]
        return tuple((width / w + height / h) / 2 for w, h in self._dimensions)

    @property
    def properties(self) -> dict[str, str]:
        """OpenSlide-style properties: the vendor (``tiff`` or ``ome-tiff``)."""
        return self._properties

    @property
    def associated_images(self) -> dict:
        """None are read (OpenSlide's label and macro images)."""
        return {}

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample`` (OpenSlide's rule)."""
        fitting = [level for level, own in enumerate(self.level_downsamples) if own <= downsample * 1.0001]
        return fitting[-1] if fitting else 0

    def _pixels(self, level: int, rows: slice, cols: slice) -> np.ndarray:
        source: np.ndarray | zarr.Array = self._levels[level]
        if level in self._in_memory:
            cached = self._in_memory[level]
            if cached is None:
                cached = self._in_memory[level] = np.asarray(source[...])
            source = cached
        if self._order is None:
            return np.asarray(source[rows, cols])
        return np.moveaxis(np.asarray(source[:, rows, cols]), 0, -1)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> Image.Image:
        """RGBA PIL image of ``size`` at ``level``, top-left at level-0 ``location``; transparent outside the image."""
        if not 0 <= level < self.level_count:
            raise openslide.OpenSlideError(f"invalid level {level}")
        downsample = self.level_downsamples[level]
        x, y = int(location[0] / downsample), int(location[1] / downsample)  # toward zero, as OpenSlide
        width, height = size
        level_width, level_height = self._dimensions[level]
        out = np.zeros((height, width, 4), np.uint8)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + width, level_width), min(y + height, level_height)
        if x1 > x0 and y1 > y0:
            pixels = self._pixels(level, slice(y0, y1), slice(x0, x1))
            if pixels.dtype == np.uint16:
                pixels = (pixels >> 8).astype(np.uint8)
            if pixels.ndim == 2:
                pixels = pixels[..., None]
            target = out[y0 - y : y1 - y, x0 - x : x1 - x]
            target[..., :3] = pixels[..., :3] if pixels.shape[2] >= 3 else pixels[..., :1]
            target[..., 3] = pixels[..., 3] if pixels.shape[2] == 4 else 255
        return Image.fromarray(out, "RGBA")

    def close(self) -> None:
        """Close the file."""
        self._tiff.close()

"""Boxes and the one place where level-0 pixels, model pixels and microns are converted.

Slide coordinates are (x, y) in level-0 pixels. Model space is the slide's bounded region resampled to the model's
mpp, with its origin at the bounds' top-left corner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MPP_40X = 0.25  # the scale speeds are compared at: tissue megapixels of a 40x scan


@dataclass(frozen=True)
class Box:
    """Axis-aligned box ``[x, x + width) x [y, y + height)`` in some pixel space."""

    x: int
    y: int
    width: int
    height: int

    @property
    def x1(self) -> int:
        """The column just right of the box."""
        return self.x + self.width

    @property
    def y1(self) -> int:
        """The row just below the box."""
        return self.y + self.height

    @property
    def slices(self) -> tuple[slice, slice]:
        """(row, col) slices for indexing an array of this pixel space."""
        return slice(self.y, self.y1), slice(self.x, self.x1)

    def slices_in(self, outer: Box) -> tuple[slice, slice]:
        """(row, col) slices of this box in an array that holds ``outer`` (which contains it)."""
        return slice(self.y - outer.y, self.y1 - outer.y), slice(self.x - outer.x, self.x1 - outer.x)

    def expand(self, margin_px: int) -> Box:
        """The box grown by ``margin_px`` on every side."""
        return Box(self.x - margin_px, self.y - margin_px, self.width + 2 * margin_px, self.height + 2 * margin_px)

    def clip(self, width: int, height: int) -> Box:
        """The part of the box inside a (0, 0, width, height) frame."""
        x0, y0 = max(self.x, 0), max(self.y, 0)
        return Box(x0, y0, max(0, min(self.x1, width) - x0), max(0, min(self.y1, height) - y0))

    def intersects(self, other: Box) -> bool:
        """Whether the two boxes share at least one pixel."""
        return self.x < other.x1 and other.x < self.x1 and self.y < other.y1 and other.y < self.y1

    def contains(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Half-open containment of points (the ownership rule relies on it: no point is in two cores)."""
        return (xs >= self.x) & (xs < self.x1) & (ys >= self.y) & (ys < self.y1)


def reflect_index(index: np.ndarray, size: int) -> np.ndarray:
    """Indices into ``[0, size)`` of positions mirrored at the edges without repeating them (NumPy's
    ``reflect`` padding, for any distance)."""
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    folded = np.abs(index) % period
    return np.where(folded >= size, period - folded, folded)


@dataclass(frozen=True)
class PatchGrid:
    """Inference patches of ``patch_px`` laid every ``patch_px - 2 * context_px`` from a frame's origin; each keeps
    its centre ``step`` and throws away ``context_px`` on every side. Beyond the frame's edges a patch sees the
    frame mirrored.

    A pixel's patch, and so its prediction, is then the same whichever window of the frame it is predicted in,
    provided the pixels of ``reads(window)`` are read: that is what makes tiled inference equal one-piece
    inference bit for bit.
    """

    patch_px: int
    context_px: int

    @property
    def step(self) -> int:
        """Distance between neighbouring patches: the part of each patch that is kept."""
        return self.patch_px - 2 * self.context_px

    def span(self, start: int, stop: int) -> tuple[int, int]:
        """Frame positions ``[lo, hi)`` the patches covering ``[start, stop)`` see (may lie outside the frame)."""
        return (start // self.step * self.step - self.context_px, -(-stop // self.step) * self.step + self.context_px)

    def seen(self, start: int, stop: int, size: int) -> np.ndarray:
        """(hi - lo,) frame indices, in ``[0, size)``, of the positions the patches covering ``[start, stop)`` see."""
        return reflect_index(np.arange(*self.span(start, stop)), size)

    def reads(self, window: Box, frame: Box) -> Box:
        """The box of ``frame`` pixels the patches covering ``window`` see (mirrored positions resolved)."""
        rows, cols = self.seen(window.y, window.y1, frame.height), self.seen(window.x, window.x1, frame.width)
        return Box(
            int(cols.min()),
            int(rows.min()),
            int(cols.max()) + 1 - int(cols.min()),
            int(rows.max()) + 1 - int(rows.min()),
        )


@dataclass(frozen=True)
class SlideFrame:
    """Maps model pixels to level-0 pixels.

    Attributes
    ----------
    slide_mpp : microns per level-0 pixel.
    model_mpp : microns per model pixel.
    origin_x, origin_y : level-0 position of model pixel (0, 0)'s top-left corner (the slide's bounds).
    """

    slide_mpp: float
    model_mpp: float
    origin_x: float = 0.0
    origin_y: float = 0.0

    @property
    def level0_per_model_px(self) -> float:
        """Level-0 pixels per model pixel."""
        return self.model_mpp / self.slide_mpp

    def model_to_level0(self, xy_model: np.ndarray) -> np.ndarray:
        """(N, 2) model-pixel (x, y) positions (pixel corners) -> level-0 (x, y)."""
        return np.asarray(xy_model, float) * self.level0_per_model_px + (self.origin_x, self.origin_y)

    def level0_to_model(self, xy_level0: np.ndarray) -> np.ndarray:
        """(N, 2) level-0 (x, y) -> model-pixel (x, y) (the inverse of ``model_to_level0``)."""
        return (np.asarray(xy_level0, float) - (self.origin_x, self.origin_y)) / self.level0_per_model_px

    def level0_box_to_model(self, box: Box) -> Box:
        """The model-pixel box that covers a level-0 box."""
        scale = self.level0_per_model_px
        x0, y0 = int((box.x - self.origin_x) / scale), int((box.y - self.origin_y) / scale)
        return Box(x0, y0, int(box.width / scale) + 1, int(box.height / scale) + 1)

    def model_size_px(self, width_level0: float, height_level0: float) -> tuple[int, int]:
        """The size in model pixels of a level-0 extent (rounded up)."""
        scale = self.level0_per_model_px
        return int(round(width_level0 / scale)), int(round(height_level0 / scale))


def block_sums(image: np.ndarray, factor: int, dtype: type) -> np.ndarray:
    """(H / factor, W / factor, ...) sums of the factor x factor blocks of pixels of an (H, W, ...) ``image`` (H and W
    multiples of ``factor``), in ``dtype``: exact integers, from which block means at a coarser resolution are made.

    Columns first, then rows, as strided views: each pixel is read once.
    """
    columns: np.ndarray = image[:, 0::factor].astype(dtype)
    for dx in range(1, factor):
        columns += image[:, dx::factor]
    sums: np.ndarray = columns[0::factor].copy()
    for dy in range(1, factor):
        sums += columns[dy::factor]
    return sums


def area_px_to_mm2(area_px: float, mpp: float) -> float:
    """An area in pixels of ``mpp`` microns, in mm²."""
    return area_px * mpp * mpp * 1e-6


def area_throughput(tissue_mm2: float, model_mpp: float, seconds: float) -> dict[str, float | None]:
    """Speed of a run over ``tissue_mm2`` of tissue: mm² per second, and tissue megapixels per second at the model's
    mpp and at 0.25 µm/px (40x), the last two comparable across models of different resolutions."""
    tissue_mpx = tissue_mm2 / model_mpp**2

    def per_second(amount: float, digits: int) -> float | None:
        """``amount`` per second of the run, rounded; None for a run of no time."""
        return round(amount / seconds, digits) if seconds else None

    return {
        "tissue_mpx_at_model_mpp": round(tissue_mpx, 3),
        "mpx_per_second": per_second(tissue_mpx, 4),
        "mpx_per_second_at_40x": per_second(tissue_mm2 / MPP_40X**2, 4),
        "tissue_mm2_per_second": per_second(tissue_mm2, 5),
    }

"""Input quality control: whether the input looks like tissue the model can read, and where it does not.

Two levels, with thresholds measured on ``shared/data`` by ``benchmarks/bench_quality.py`` (all 602 images of MoNuSeg,
CoNSeP, NuCLS, DSB2018, DeepLIIF, the examples, and the real slides: none flagged):

**Slide** (``input_quality``, before any region runs, on tiles sampled over the detected tissue):

* **structure**: the correlation of each pixel's grey value with its right and lower neighbours. Tissue is smooth
  at the scale of a pixel: 0.865 at the lowest (a CoNSeP JPEG patch); uniform noise 0.00, noise blurred by 1 px 0.78.
  Flagged below 0.5.
* **dark**: the share of the tiles' pixels darker than 30 in every channel (black: folds, ink, an unexposed image).
  Real images: at most 0.006; flagged above 0.5.

**Tile** (``region_quality``, in every region task, per grid tile of the region's core, at ``QC_MPP`` whatever the
model's resolution, on the tiles the tissue mask covers). Real tiles of 128 µm: 1356 (the data sets, the examples
and the two real slides), none flagged; degraded: 90 MoNuSeg and NuCLS tiles blurred, inked, folded or replaced.

* **blur**: the energy of the finest band (grey minus its 1 px Gaussian) over that of the next band (1 px minus 3 px
  Gaussian). Focus loss takes the fine band first; the ratio does not depend on stain strength. Real tiles: 0.067 at
  the lowest (a DSB2018 tile). Flagged below 0.06, on tiles with structure (next-band energy at least 2: a
  featureless tile has no focus to lose): a Gaussian blur of 0.5 µm flags none, 1 µm 78%, 2 µm all.
* **ink**: the share of tissue pixels coloured green to cyan (hue 75-190°, saturation > 0.15), which neither H&E nor
  DAB/hematoxylin produce: real tiles at most 0.155 (CMU-1, where a cyan tissue-marking dye lines the tissue's
  edge); flagged above 0.2; a green marker stroke: 91% of tiles. Blue and red markers are not told apart from
  hematoxylin and eosin by colour (a CoNSeP tile has 48% of its tissue in blue-marker colours), black ones count as
  dark.
* **dark**: near-black share above 0.5, or a mean optical density (sum of the three channels) above 2.4: a fold's
  double layer or heavy ink (real tiles at most 2.11, CoNSeP). A fold is caught only where it is darker than any real
  tile: the optical density doubled flags 9% of tiles, tripled 40%.
* **not tissue**: neighbour correlation below 0.25 (at 0.5 µm/px over one tile; real tiles 0.63 at the lowest;
  noise 0.00, all flagged).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pathoseg.geometry import Box, area_px_to_mm2, block_sums
from pathoseg.optics import optical_density

MIN_NEIGHBOUR_CORRELATION = 0.5
DARK_RGB = 30
MAX_DARK_FRACTION = 0.5
MIN_SIDE_UM = 32.0  # a smaller image cannot hold a few whole nuclei (~7 µm) with their surroundings

QC_MPP = 0.5  # tile checks run at this resolution, so one threshold holds for every model
GLASS_GREY = 215  # brighter (mean of R, G, B) is glass or background
MIN_TILE_CORRELATION = 0.25  # at QC_MPP, over one tile: real tiles 0.63 at the lowest, noise 0.00
MIN_BLUR_RATIO = 0.06
MIN_STRUCTURE = 2.0
INK_HUE_DEG = (75.0, 190.0)
INK_SATURATION = 0.15
MAX_INK_FRACTION = 0.2
MAX_MEAN_OD = 2.4
TILE_METRICS = (
    "tissue_fraction",
    "blur_ratio",
    "structure",
    "ink_fraction",
    "dark_fraction",
    "mean_od",
    "neighbour_correlation",
)
TILE_FLAGS = ("blur", "ink", "dark", "not_tissue")
FLAG_COLORS = {"blur": [255, 200, 0], "ink": [0, 170, 120], "dark": [90, 40, 140], "not_tissue": [220, 0, 0]}


def neighbour_correlation(tiles: list[np.ndarray]) -> float:
    """Correlation of grey values with the right and lower neighbours, pooled over (H, W, 3) uint8 tiles; NaN for
    flat input."""
    greys = [tile.astype(np.float32).mean(axis=2) for tile in tiles]
    return _pooled_correlation(
        [pair for grey in greys for pair in ((grey[:, :-1], grey[:, 1:]), (grey[:-1], grey[1:]))]
    )


def _pooled_correlation(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Pearson correlation of the values of the first arrays of ``pairs`` with those of the second, pooled over the
    pairs (each pair of arrays of one shape); NaN where either side is constant (no warning: a flat tile is
    common)."""
    n = sum(left.size for left, _ in pairs)
    if n < 2:
        return float("nan")
    sums = np.zeros(5)
    for left, right in pairs:
        left, right = left.astype(np.float64), right.astype(np.float64)
        sums += [left.sum(), right.sum(), np.vdot(left, left), np.vdot(right, right), np.vdot(left, right)]
    sum_l, sum_r, sum_ll, sum_rr, sum_lr = sums
    spread = (sum_ll - sum_l**2 / n) * (sum_rr - sum_r**2 / n)
    return float((sum_lr - sum_l * sum_r / n) / np.sqrt(spread)) if spread > 0 else float("nan")


def dark_fraction(tiles: list[np.ndarray]) -> float:
    """Share of the pixels of (H, W, 3) tiles darker than ``DARK_RGB`` in every channel."""
    dark = sum(np.count_nonzero(brightest_channel(tile.reshape(-1, 3)) < DARK_RGB) for tile in tiles)
    pixels = sum(tile.size // 3 for tile in tiles)
    return dark / pixels if pixels else float("nan")


def input_quality(tiles: list[np.ndarray], darkfield: bool = False) -> dict:
    """The checks on tissue tiles: their figures, and ``warnings``, one sentence per failed check (no darkness
    check on a ``darkfield`` slide, whose background is black)."""
    correlation, dark = neighbour_correlation(tiles), (float("nan") if darkfield else dark_fraction(tiles))
    warnings = []
    if not correlation >= MIN_NEIGHBOUR_CORRELATION:
        warnings.append(
            f"neighbouring pixels are nearly unrelated (correlation {correlation:.2f}; tissue: above "
            f"0.86): this looks like noise, not tissue, so the nuclei found are not to be trusted"
        )
    if dark > MAX_DARK_FRACTION:
        warnings.append(f"{100 * dark:.0f}% of the tissue is nearly black (folds, ink or an unexposed image)")
    return {"neighbour_correlation": round(correlation, 4), "dark_fraction": round(dark, 4), "warnings": warnings}


def qc_factor(mpp: float) -> int:
    """The block side (px at ``mpp``) that ``at_qc_mpp`` averages."""
    return max(1, int(round(QC_MPP / mpp)))


def at_qc_mpp(rgb: np.ndarray, mpp: float) -> np.ndarray:
    """(H, W, 3) uint8 at ``mpp`` -> (h, w, 3) float32 at about ``QC_MPP``: means of factor x factor blocks, a
    partial block at the edge padded with zeros (``skimage.transform.downscale_local_mean``'s values, bit for bit);
    unchanged when coarser."""
    factor = qc_factor(mpp)
    if factor == 1:
        return rgb.astype(np.float32)
    height, width = rgb.shape[:2]
    padded = np.pad(rgb, ((0, -height % factor), (0, -width % factor), (0, 0)))
    # Block sums from strided views are 9x faster than downscale_local_mean on a tile (1 ms vs 9 ms), and tile QC
    # was an eighth of a region task's time.
    return block_sums(padded, factor, np.uint32).astype(np.float32) / np.float32(factor * factor)


def tile_quality(image: np.ndarray) -> np.ndarray:
    """The ``TILE_METRICS`` of one tile.

    Focus and structure are measured over the whole tile (glass adds little energy to either band), colour and
    darkness over its stained pixels (darker than ``GLASS_GREY``).

    Parameters
    ----------
    image : (h, w, 3) float32, the tile at ``QC_MPP`` (``at_qc_mpp``).

    Returns
    -------
    (len(TILE_METRICS),) float; NaN where the tile is too small (focus) or too pale (colour) to measure.
    """
    grey = (image[..., 0] + image[..., 1] + image[..., 2]) / np.float32(3)  # mean(axis=2)'s values, 15x faster
    stained = grey < GLASS_GREY
    metrics = np.full(len(TILE_METRICS), np.nan)
    metrics[0] = stained.mean()
    if min(grey.shape) >= 16:
        smooth = ndimage.gaussian_filter(grey, 1.0)
        fine_band = grey - smooth
        next_band = smooth - ndimage.gaussian_filter(grey, 3.0)
        inner = (slice(4, -4), slice(4, -4))  # away from the tile's edge, where the filters see padding
        metrics[2] = next_band[inner].var()
        metrics[1] = fine_band[inner].var() / max(metrics[2], 1e-6)
        metrics[6] = _pooled_correlation([(grey[:, :-1], grey[:, 1:]), (grey[:-1], grey[1:])])
    if stained.sum() >= 64:
        pixels = image[stained]
        metrics[3] = np.mean(green_to_cyan(pixels))
        metrics[4] = dark_fraction([pixels])
        metrics[5] = optical_density(pixels).sum(axis=1).mean()
    return metrics


def green_to_cyan(pixels: np.ndarray) -> np.ndarray:
    """(N,) bool: which (N, 3) RGB pixels (any scale) have a hue in ``INK_HUE_DEG`` and a saturation above
    ``INK_SATURATION``, hue and saturation as HSV defines them (``skimage.color.rgb2hsv``).

    Computed as two comparisons, without a division (10x faster on a tile): where blue is the brightest channel the
    hue is 240° + 60° (R - G) / spread (180-300°), where green is (and blue is not) 120° + 60° (B - R) / spread
    (60-180°), where red is 300-60°; so a range from 60-180° to 180-300° (75-190°) is one bound on each side.
    """
    low_deg, high_deg = INK_HUE_DEG
    red, green, blue = pixels[:, 0], pixels[:, 1], pixels[:, 2]
    high = brightest_channel(pixels)
    spread = high - np.minimum(np.minimum(red, green), blue)
    blue_highest = blue == high
    green_highest = (green == high) & ~blue_highest
    hue_in_range = (green_highest & (60 * (blue - red) > (low_deg - 120) * spread)) | (
        blue_highest & (60 * (red - green) < (high_deg - 240) * spread)
    )
    return hue_in_range & (spread > INK_SATURATION * high)


def brightest_channel(pixels: np.ndarray) -> np.ndarray:
    """(N,) the largest of each (N, 3) pixel's channels (``max(axis=1)``'s values; channel by channel, 30x faster)."""
    return np.maximum(np.maximum(pixels[:, 0], pixels[:, 1]), pixels[:, 2])


def region_quality(rgb: np.ndarray, window: Box, core: Box, tile_px: int, mpp: float) -> np.ndarray:
    """``tile_quality`` of every grid tile in a region's core.

    Parameters
    ----------
    rgb : (window.height, window.width, 3) uint8, the region's window.
    window, core : model-pixel boxes of the window and of the core it holds; the core's tiles are ``tile_px`` grid
        tiles (the core starts on a tile corner).

    Returns
    -------
    (T, 2 + len(TILE_METRICS)) float32: tile row, tile column, then the metrics.
    """
    factor = qc_factor(mpp)
    if tile_px % factor:  # tiles do not start on QC blocks: each its own blocks
        tile_images = ((box, at_qc_mpp(rgb[box.slices_in(window)], mpp)) for box in core_tiles(core, tile_px))
    else:  # the core's blocks once: one pass instead of a strided pass per tile (a third of the time)
        core_image = at_qc_mpp(rgb[core.slices_in(window)], mpp)
        tile_images = ((box, core_image[blocks_of(box, core, factor).slices]) for box in core_tiles(core, tile_px))
    rows = [[box.y // tile_px, box.x // tile_px, *tile_quality(image)] for box, image in tile_images]
    return np.array(rows, np.float32).reshape(-1, 2 + len(TILE_METRICS))


def blocks_of(tile: Box, core: Box, factor: int) -> Box:
    """The QC blocks of ``tile`` in ``at_qc_mpp`` of ``core`` (both start on a block corner; a partial block
    counts)."""
    return Box(
        (tile.x - core.x) // factor, (tile.y - core.y) // factor, -(-tile.width // factor), -(-tile.height // factor)
    )


def core_tiles(core: Box, tile_px: int) -> Iterator[Box]:
    """The grid tiles of ``core`` (which starts on a tile corner), row by row; those at its far edges cut short."""
    for y in range(core.y, core.y1, tile_px):
        for x in range(core.x, core.x1, tile_px):
            yield Box(x, y, min(tile_px, core.x1 - x), min(tile_px, core.y1 - y))


def tile_flags(metrics: np.ndarray, judged: np.ndarray, darkfield: bool = False) -> dict[str, np.ndarray]:
    """Which tiles fail which check: ``TILE_FLAGS`` -> (...) bool, from (..., len(TILE_METRICS)) metrics, among the
    ``judged`` (...) tiles (those the tissue mask covers). A tile that is not tissue is not also called inked or
    dark, and a ``darkfield`` slide (light tissue on black) gets no colour or darkness checks."""
    column = {name: metrics[..., i] for i, name in enumerate(TILE_METRICS)}
    with np.errstate(invalid="ignore"):
        not_tissue = judged & (column["neighbour_correlation"] < MIN_TILE_CORRELATION)
        colour_checked = judged & ~not_tissue & (not darkfield)
        return {
            "blur": judged
            & ~not_tissue
            & (column["structure"] >= MIN_STRUCTURE)
            & (column["blur_ratio"] < MIN_BLUR_RATIO),
            "ink": colour_checked & (column["ink_fraction"] > MAX_INK_FRACTION),
            "dark": colour_checked
            & ((column["dark_fraction"] > MAX_DARK_FRACTION) | (column["mean_od"] > MAX_MEAN_OD)),
            "not_tissue": not_tissue,
        }


@dataclass
class QualityMap:
    """Tile checks over the whole slide.

    metrics : (rows, cols, len(TILE_METRICS)) float, NaN where no region task looked (no tissue nearby).
    judged : (rows, cols) bool, the tiles the tissue mask covers.
    flags : ``TILE_FLAGS`` -> (rows, cols) bool.
    tile_px : grid tile side in model pixels; mpp : model µm/px.
    """

    metrics: np.ndarray
    judged: np.ndarray
    flags: dict[str, np.ndarray]
    tile_px: int
    mpp: float

    @classmethod
    def from_regions(
        cls,
        region_rows: Iterable[np.ndarray],
        has_tissue: np.ndarray,
        tile_px: int,
        mpp: float,
        darkfield: bool = False,
    ) -> QualityMap:
        """Assemble the regions' ``region_quality`` rows into a map over the (rows, cols) ``has_tissue`` tiles."""
        metrics = np.full((*has_tissue.shape, len(TILE_METRICS)), np.nan)
        for rows in region_rows:
            if len(rows):
                metrics[rows[:, 0].astype(int), rows[:, 1].astype(int)] = rows[:, 2:]
        judged = has_tissue & np.isfinite(metrics[..., 0])
        return cls(metrics, judged, tile_flags(metrics, judged, darkfield), tile_px, mpp)

    def summary(self) -> dict:
        """Per check: tiles flagged, their area in mm² and their share of the judged tissue tiles."""
        judged = int(self.judged.sum())
        tile_mm2 = area_px_to_mm2(self.tile_px**2, self.mpp)
        flagged = {
            name: {
                "tiles": int(mask.sum()),
                "area_mm2": round(float(mask.sum()) * tile_mm2, 4),
                "fraction": round(float(mask.sum()) / judged, 4) if judged else 0.0,
            }
            for name, mask in self.flags.items()
        }
        return {"tile_um": round(self.tile_px * self.mpp, 1), "tiles_judged": judged, "flagged": flagged}

    def warnings(self, min_fraction: float = 0.05) -> list[str]:
        """One sentence per check that flags at least ``min_fraction`` of the judged tissue."""
        summary = self.summary()
        words = {
            "blur": "out of focus",
            "ink": "covered by pen ink",
            "dark": "dark (folds, ink or thick tissue)",
            "not_tissue": "not like tissue (noise)",
        }
        return [
            f"{100 * figures['fraction']:.0f}% of the tissue tiles are {words[name]} ({figures['tiles']} tiles, "
            f"{figures['area_mm2']:.3f} mm²): see the QC map in the report and review.geojson"
            for name, figures in summary["flagged"].items()
            if figures["tiles"] and figures["fraction"] >= min_fraction
        ]

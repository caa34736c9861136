"""Tile and region grids in model space, and which of them hold tissue.

Tiles (``tile_px``) are the zarr chunks. Regions (``region_px``, a multiple of ``tile_px``) are the units of work:
a region task post-processes its core expanded by ``margin_px`` (its window) and keeps the nuclei whose centroid
lies in its core; its inference reads the pixels the window's patches see (``PatchGrid.reads``).
Cores partition the image, so every nucleus is owned by exactly one region. The same cells, as *blocks* keyed
(row, col), are the units of tiling: one task writes a block's tiles and its chunks of every pyramid level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pathoseg.errors import SettingsError
from pathoseg.geometry import Box, PatchGrid


@dataclass(frozen=True)
class Region:
    """A unit of work: it keeps the nuclei of ``core``, post-processes ``window`` (the core and its margin) and
    reads ``reads`` (the pixels the inference patches of the window see)."""

    index: int
    core: Box
    window: Box
    reads: Box


@dataclass(frozen=True)
class Grid:
    """Tiles and regions over a ``width_px`` x ``height_px`` model-space image."""

    width_px: int
    height_px: int
    tile_px: int
    region_px: int
    margin_px: int
    patches: PatchGrid

    def __post_init__(self) -> None:
        if self.region_px % self.tile_px:
            raise SettingsError(f"region_px {self.region_px} must be a multiple of tile_px {self.tile_px}")

    @property
    def frame(self) -> Box:
        """The whole model image's box."""
        return Box(0, 0, self.width_px, self.height_px)

    @property
    def tile_shape(self) -> tuple[int, int]:
        """(rows, cols) of tiles."""
        return -(-self.height_px // self.tile_px), -(-self.width_px // self.tile_px)

    def tile_box(self, row: int, col: int) -> Box:
        """Tile (row, col)'s box, cut at the image's edge."""
        return Box(col * self.tile_px, row * self.tile_px, self.tile_px, self.tile_px).clip(
            self.width_px, self.height_px
        )

    def regions(self) -> list[Region]:
        """All regions in raster order."""
        regions: list[Region] = []
        for y in range(0, self.height_px, self.region_px):
            for x in range(0, self.width_px, self.region_px):
                core = Box(x, y, self.region_px, self.region_px).clip(self.width_px, self.height_px)
                window = core.expand(self.margin_px).clip(self.width_px, self.height_px)
                regions.append(Region(len(regions), core, window, self.patches.reads(window, self.frame)))
        return regions

    def block_box(self, block: tuple[int, int]) -> Box:
        """The region core at block (row, col)."""
        return Box(block[1] * self.region_px, block[0] * self.region_px, self.region_px, self.region_px).clip(
            self.width_px, self.height_px
        )

    def block_of(self, tile: tuple[int, int]) -> tuple[int, int]:
        """The block (a zarr chunk of tiles) a tile belongs to."""
        return tile[0] * self.tile_px // self.region_px, tile[1] * self.tile_px // self.region_px

    def blocks_in(self, box: Box) -> list[tuple[int, int]]:
        """Blocks intersecting ``box``."""
        rows = range(box.y // self.region_px, -(-box.y1 // self.region_px))
        cols = range(box.x // self.region_px, -(-box.x1 // self.region_px))
        return [(r, c) for r in rows for c in cols]

    def tiles_in(self, box: Box) -> list[tuple[int, int]]:
        """Tiles intersecting ``box``."""
        rows = range(box.y // self.tile_px, -(-box.y1 // self.tile_px))
        cols = range(box.x // self.tile_px, -(-box.x1 // self.tile_px))
        return [(r, c) for r in rows for c in cols]


def tissue_tiles(grid: Grid, tissue_mask: np.ndarray, mask_px_per_model_px: float) -> np.ndarray:
    """(rows, cols) bool: tiles that contain any tissue in the thumbnail mask."""
    rows, cols = grid.tile_shape
    has_tissue = np.zeros((rows, cols), bool)
    step = grid.tile_px * mask_px_per_model_px
    for r in range(rows):
        for c in range(cols):
            y0, x0 = int(np.floor(r * step)), int(np.floor(c * step))
            y1, x1 = int(np.ceil((r + 1) * step)), int(np.ceil((c + 1) * step))
            has_tissue[r, c] = tissue_mask[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)].any()
    return has_tissue


def plan_work(grid: Grid, has_tissue: np.ndarray) -> tuple[list[Region], list[tuple[int, int]]]:
    """Regions whose core touches tissue, and the tiles their inference reads (tissue tiles and their neighbours).

    Tiles that hold no tissue and touch none are never read from the slide: they read as glass (white).
    """
    near_tissue = ndimage.binary_dilation(has_tissue, structure=np.ones((3, 3), bool))
    regions = [region for region in grid.regions() if any(has_tissue[r, c] for r, c in grid.tiles_in(region.core))]
    needed = sorted({tile for region in regions for tile in grid.tiles_in(region.reads) if near_tissue[tile]})
    return regions, needed


def tiles_by_block(grid: Grid, tiles: list[tuple[int, int]]) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """The tiles to write, grouped by the block that holds them (blocks in raster order)."""
    blocks: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for tile in sorted(tiles):
        blocks.setdefault(grid.block_of(tile), []).append(tile)
    return dict(sorted(blocks.items()))

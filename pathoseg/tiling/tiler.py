"""Slide -> zarr at the model's resolution, block by block, resumable. Never holds the whole slide in memory."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from scipy import ndimage

from pathoseg.geometry import Box, SlideFrame
from pathoseg.io import ngff
from pathoseg.io.slide import Slide, open_slide
from pathoseg.tiling.grid import Grid


def read_model_box(slide: Slide, frame: SlideFrame, box: Box) -> np.ndarray:
    """(box.height, box.width, 3) uint8 RGB of a model-space box, read from the level just finer than the model's
    resolution and resampled (bilinear, with Gaussian anti-aliasing when shrinking)."""
    level = slide.level_for_mpp(frame.model_mpp)
    downsample = slide.level_downsamples[level]
    level_per_model = frame.level0_per_model_px / downsample  # level pixels per model pixel
    pad = 3
    lx0 = int(np.floor(box.x * level_per_model)) - pad
    ly0 = int(np.floor(box.y * level_per_model)) - pad
    lx1 = int(np.ceil(box.x1 * level_per_model)) + pad
    ly1 = int(np.ceil(box.y1 * level_per_model)) + pad
    region = slide.read_region(
        round(frame.origin_x + lx0 * downsample), round(frame.origin_y + ly0 * downsample), level, lx1 - lx0, ly1 - ly0
    )
    if abs(level_per_model - 1) < 1e-6:
        return np.ascontiguousarray(region[box.y - ly0 : box.y1 - ly0, box.x - lx0 : box.x1 - lx0])
    # Output pixel centre (i + 0.5) in model px maps to (i + 0.5) * r - 0.5 in level-pixel indices.
    offset = [(box.y + 0.5) * level_per_model - 0.5 - ly0, (box.x + 0.5) * level_per_model - 0.5 - lx0]
    out = np.empty((box.height, box.width, 3), np.uint8)
    sigma = max(0.0, (level_per_model - 1) / 2)
    for channel in range(3):
        plane = region[..., channel].astype(np.float32)
        if sigma > 0.3:
            plane = ndimage.gaussian_filter(plane, sigma)
        resampled = ndimage.affine_transform(
            plane,
            [level_per_model, level_per_model],
            offset=offset,
            output_shape=(box.height, box.width),
            order=1,
            mode="nearest",
        )
        out[..., channel] = np.clip(resampled + 0.5, 0, 255).astype(np.uint8)
    return out


@dataclass(frozen=True)
class TileJob:
    """What a tiling task needs besides the block: small and picklable, so it runs on any worker."""

    slide_path: str
    slide_mpp: float | None  # the user's --mpp, when the file has none
    frame: SlideFrame
    grid: Grid
    store_path: str


@functools.lru_cache(maxsize=4)
def _open_cached(path: str, size: int, mtime_ns: int, mpp: float | None) -> Slide:
    return open_slide(path, mpp)


def _slide_for(job: TileJob) -> Slide:
    """This process's open handle on the job's slide (reopened when the file changes)."""
    stat = Path(job.slide_path).stat()
    return _open_cached(job.slide_path, stat.st_size, stat.st_mtime_ns, job.slide_mpp)


def tile_block(job: TileJob, block: tuple[int, int], tiles: list[tuple[int, int]], slide: Slide | None = None) -> int:
    """Read a block's listed tiles from the slide (``slide``, or this process's handle on the job's) at model
    resolution and write the block into the store.

    Returns the number of tiles written now (0 when the block was already done). Tiles not listed stay white.
    """
    if ngff.block_done(job.store_path, block):
        return 0
    slide, grid = slide or _slide_for(job), job.grid
    block_box = grid.block_box(block)
    rgb = np.full((block_box.height, block_box.width, 3), 255, np.uint8)
    for tile in tiles:
        box = grid.tile_box(*tile)
        rgb[box.slices_in(block_box)] = read_model_box(slide, job.frame, box)
    root = zarr.open_group(job.store_path, mode="r+", zarr_format=2)
    ngff.write_block(root, block_box.x, block_box.y, rgb)
    ngff.mark_block_done(job.store_path, block, ngff.block_chunk_checksums(job.store_path, block_box))
    return len(tiles)

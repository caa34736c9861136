"""Slide -> zarr at the model's resolution, tile by tile, resumable. Never holds the whole slide in memory."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

from pathoseg.geometry import Box, SlideFrame
from pathoseg.io import ngff
from pathoseg.io.slide import Slide

log = logging.getLogger(__name__)


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
    region = slide.read_region(round(frame.origin_x + lx0 * downsample), round(frame.origin_y + ly0 * downsample),
                               level, lx1 - lx0, ly1 - ly0)
    if abs(level_per_model - 1) < 1e-6:
        return np.ascontiguousarray(region[box.y - ly0:box.y1 - ly0, box.x - lx0:box.x1 - lx0])
    # Output pixel centre (i + 0.5) in model px maps to (i + 0.5) * r - 0.5 in level-pixel indices.
    offset = [(box.y + 0.5) * level_per_model - 0.5 - ly0, (box.x + 0.5) * level_per_model - 0.5 - lx0]
    out = np.empty((box.height, box.width, 3), np.uint8)
    sigma = max(0.0, (level_per_model - 1) / 2)
    for channel in range(3):
        plane = region[..., channel].astype(np.float32)
        if sigma > 0.3:
            plane = ndimage.gaussian_filter(plane, sigma)
        resampled = ndimage.affine_transform(plane, [level_per_model, level_per_model], offset=offset,
                                             output_shape=(box.height, box.width), order=1, mode="nearest")
        out[..., channel] = np.clip(resampled + 0.5, 0, 255).astype(np.uint8)
    return out


def tile_slide(slide: Slide, frame: SlideFrame, store_path: Path, root, tile_px: int,
               tiles: list[tuple[int, int]], width_px: int, height_px: int, threads: int = 2,
               progress: Callable[[int], None] | None = None) -> int:
    """Write the listed tiles not yet in the store; returns how many were written now.

    Reads run in a small thread pool (OpenSlide decodes outside the GIL); writes happen in this thread, so every
    pyramid chunk has one writer.
    """
    done = ngff.tiles_done(store_path)
    todo = [tile for tile in tiles if tile not in done]
    if progress:
        progress(len(tiles) - len(todo))
    if not todo:
        return 0

    def read(tile: tuple[int, int]) -> np.ndarray:
        box = Box(tile[1] * tile_px, tile[0] * tile_px, tile_px, tile_px).clip(width_px, height_px)
        return read_model_box(slide, frame, box)

    # Executor.map submits everything at once; chunks keep at most a few decoded tiles in memory at a time.
    chunk = 4 * threads
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(todo), chunk):
            batch = todo[start:start + chunk]
            for tile, rgb in zip(batch, pool.map(read, batch)):
                ngff.write_tile(root, tile[0], tile[1], tile_px, rgb)
                ngff.mark_tile_done(store_path, *tile)
                if progress:
                    progress(1)
    log.info("tiled %d tiles (%d already in the store)", len(todo), len(tiles) - len(todo))
    return len(todo)

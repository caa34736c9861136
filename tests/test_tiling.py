"""Tissue detection, model-resolution reads and the resumable zarr tiler on tifffile-written slides."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared

from pathoseg.config import load_config
from pathoseg.geometry import Box, PatchGrid, SlideFrame
from pathoseg.io import ngff
from pathoseg.io.slide import open_slide
from pathoseg.synthetic import SyntheticSlide
from pathoseg.tiling.grid import Grid, plan_work, tiles_by_block, tissue_tiles
from pathoseg.tiling.tiler import TileJob, read_model_box, tile_block
from pathoseg.tiling.tissue import find_tissue


def test_tissue_mask_matches_the_drawn_tissue(svs_slide):
    slide = open_slide(svs_slide)
    tissue, _ = find_tissue(slide, load_config())
    h, w = tissue.mask.shape
    ys, xs = np.mgrid[0:h, 0:w]
    truth = SyntheticSlide(2600, 1800).in_tissue((xs + 0.5) * tissue.level0_per_px, (ys + 0.5) * tissue.level0_per_px)
    agreement = (tissue.mask == truth).mean()
    assert agreement > 0.93
    assert tissue.area_mm2 == pytest.approx(truth.sum() * tissue.mpp**2 * 1e-6, rel=0.1)


def test_fluorescence_tissue_is_what_glows():
    """A DAPI slide (nuclei glow on black) is recognised as darkfield; its tissue is the glowing part, not the whole
    black slide (it was all 'tissue' before)."""
    slide = open_slide(shared("slides/Hamamatsu-test3-DAPI-2-387.ndpi"))
    tissue, thumbnail = find_tissue(slide, load_config())
    assert tissue.darkfield
    assert 0.5 < tissue.fraction < 0.85  # the section covers about three quarters of the slide
    glowing, black = thumbnail.max(axis=2) > 60, thumbnail.max(axis=2) < 5
    assert tissue.mask[glowing].mean() > 0.97 and tissue.mask[black].mean() < 0.05


@pytest.mark.parametrize(
    "relative",
    [
        "slides/CMU-1-Small-Region.svs",
        "examples/he-0.5mpp.ome.tif",
        "examples/ihc-dab-roi.png",
        "examples/he-small.jpg",
    ],
)
def test_brightfield_is_not_darkfield(relative):
    tissue, _ = find_tissue(open_slide(shared(relative), mpp=0.5), load_config())
    assert not tissue.darkfield


def test_same_resolution_read_is_exact(svs_slide):
    slide = open_slide(svs_slide)
    frame = SlideFrame(slide.mpp, 0.25)
    direct = slide.read_region(300, 200, 0, 128, 96)
    assert np.array_equal(read_model_box(slide, frame, Box(300, 200, 128, 96)), direct)


def test_upsampled_read_matches_the_slide(tiff_slide):
    """A 0.5 µm/px slide read at 0.25: each model pixel is the interpolated slide pixel it falls in."""
    slide = open_slide(tiff_slide)
    frame = SlideFrame(slide.mpp, 0.25)
    model = read_model_box(slide, frame, Box(400, 300, 200, 160)).astype(float)
    level0 = slide.read_region(200, 150, 0, 100, 80).astype(float)
    shrunk = model.reshape(80, 2, 100, 2, 3).mean(axis=(1, 3))
    assert np.abs(shrunk[2:-2, 2:-2] - level0[2:-2, 2:-2]).mean() < 6


def test_tiler_writes_blocks_once_and_resumes(svs_slide, tmp_path):
    slide = open_slide(svs_slide)
    frame = SlideFrame(slide.mpp, 0.25)
    grid = Grid(2600, 1800, tile_px=512, region_px=1024, margin_px=64, patches=PatchGrid(512, 16))
    tissue, _ = find_tissue(slide, load_config())
    regions, tiles = plan_work(grid, tissue_tiles(grid, tissue.mask, 1 / tissue.level0_per_px))
    assert 0 < len(tiles) <= 4 * 6 and regions
    blocks = tiles_by_block(grid, tiles)
    assert sorted(t for block_tiles in blocks.values() for t in block_tiles) == sorted(tiles)
    assert all(grid.block_of(t) == block for block, block_tiles in blocks.items() for t in block_tiles)
    store = tmp_path / "store.zarr"
    identity = {"slide": "x"}
    root = ngff.create_image_store(store, "x", 2600, 1800, 512, 1024, 0.25, identity)
    assert ngff.open_image_store(store, identity) is not None and ngff.open_image_store(store, {"slide": "y"}) is None
    job = TileJob(str(svs_slide), None, frame, grid, str(store))
    (first, first_tiles), *rest = blocks.items()
    assert tile_block(job, first, first_tiles) == len(first_tiles)
    assert tile_block(job, first, first_tiles) == 0  # done: a rerun skips it
    for block, block_tiles in rest:
        tile_block(job, block, block_tiles)
    for row, col in tiles:
        box = grid.tile_box(row, col)
        stored = ngff.read_window(root, box.y, box.x, box.height, box.width)
        assert np.array_equal(stored, read_model_box(slide, frame, box))
    untouched = sorted(set(np.ndindex(*grid.tile_shape)) - set(tiles))
    if untouched:
        box = grid.tile_box(*untouched[0])
        assert (ngff.read_window(root, box.y, box.x, box.height, box.width) == 255).all()
    coarse = root["2"]
    assert coarse.shape == (3, -(-1800 // 16), -(-2600 // 16)) and coarse.chunks == (3, 64, 64)
    level0 = ngff.read_window(root, 0, 0, 1024, 1024).astype(float)
    assert (
        np.abs(
            ngff.read_window(root, 0, 0, 64, 64, level=2) - level0.reshape(64, 16, 64, 16, 3).mean(axis=(1, 3))
        ).max()
        <= 0.5
    )


@pytest.mark.parametrize("height, width", [(256, 512), (1001, 777), (13, 5)])
def test_pyramid_levels_are_rounded_block_means(height, width):
    """Every store level is the mean over its factor's blocks, rounded half to even, edge blocks padded by
    replicating the last row and column: bit for bit what averaging each level from the finest gives."""
    rgb = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    levels = ngff.pyramid_of(rgb)
    assert len(levels) == len(ngff.PYRAMID_FACTORS) and np.array_equal(levels[0], rgb)
    for level, factor in zip(levels[1:], ngff.PYRAMID_FACTORS[1:]):
        padded = np.pad(rgb, ((0, -height % factor), (0, -width % factor), (0, 0)), mode="edge").astype(np.float64)
        blocks = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor, 3)
        assert level.dtype == np.uint8 and np.array_equal(level, np.round(blocks.mean(axis=(1, 3))))

"""plan_slide(): everything decided about a slide before any tile is read: pixel size, output folder, tissue (inside
the regions of interest), input checks, the grid of tiles and regions, the zarr store that caches them."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
from scipy import ndimage

from pathoseg.config import Config
from pathoseg.geometry import PatchGrid, SlideFrame
from pathoseg.io import ngff
from pathoseg.io.annotations import RegionOfInterest, read_roi
from pathoseg.io.files import prepare_output
from pathoseg.io.slide import Slide, SlideError, open_slide
from pathoseg.measure.quality import MIN_SIDE_UM, input_quality
from pathoseg.measure.stain import StainEstimate, estimate_hdab_vectors
from pathoseg.models.weights import ModelMetadata, load_model
from pathoseg.tiling.grid import Grid, plan_work, tissue_tiles
from pathoseg.tiling.tiler import TileJob
from pathoseg.tiling.tissue import TissueMask, find_tissue, sample_tissue_tiles, tissue_in_roi

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SlidePlan:
    """Everything decided about a slide before any tile is read: geometry, tissue, work, store."""

    slide: Slide
    out_dir: Path
    metadata: ModelMetadata
    model_sha256: str
    frame: SlideFrame
    tissue: TissueMask
    grid: Grid
    regions: list
    tiles: list
    has_tissue: np.ndarray  # (tile rows, tile cols) bool: tiles the tissue mask touches (``tissue_tiles``)
    store_path: Path
    store_identity: dict
    mpp_override: float | None = None
    stains: StainEstimate | None = None  # IHC with stain.estimate_vectors: the slide's own vectors
    roi: RegionOfInterest | None = None
    quality: dict = dataclasses.field(default_factory=dict)  # measure.quality.input_quality of the tissue

    def tile_job(self) -> TileJob:
        """Absolute paths: workers may run in another directory (on a cluster, on a shared filesystem)."""
        return TileJob(
            str(self.slide.path.resolve()), self.mpp_override, self.frame, self.grid, str(self.store_path.resolve())
        )

    @property
    def nuclei_dir(self) -> Path:
        """Where the regions' results are kept (the resume cache beside the store)."""
        return self.store_path / "nuclei"


def slide_stains(slide: Slide, tissue: TissueMask, config: Config) -> StainEstimate | None:
    """The slide's own hematoxylin-DAB vectors when the run is IHC and asks for them (else None: the configured
    or default matrix applies)."""
    if config.stain.mode != "ihc" or not config.stain.estimate_vectors or config.stain.stain_matrix is not None:
        return None
    tiles = sample_tissue_tiles(slide, tissue)
    estimate = estimate_hdab_vectors(np.concatenate([tile.reshape(-1, 3) for tile in tiles]))
    if estimate.source == "default":
        log.warning("%s: default stain vectors kept: %s", slide.path, estimate.reason)
    return estimate


def plan_slide(
    slide_path: str | Path,
    out_dir: str | Path,
    config: Config,
    mpp: float | None = None,
    roi_path: str | Path | None = None,
) -> SlidePlan:
    """Open the slide, check pixel size and output folder, find tissue (inside the annotations of ``roi_path``, a
    GeoJSON file, when given), lay out tiles and regions."""
    slide = open_slide(slide_path, mpp)
    try:
        return _plan_open_slide(slide, out_dir, config, mpp, roi_path)
    except BaseException:
        slide.close()
        raise


def _plan_open_slide(
    slide: Slide, out_dir: str | Path, config: Config, mpp: float | None, roi_path: str | Path | None
) -> SlidePlan:
    roi = read_roi(roi_path, slide.bounds_polygon) if roi_path else None
    slide_mpp = slide.required_mpp
    side_um = min(slide.bounds.width, slide.bounds.height) * slide_mpp
    if side_um < MIN_SIDE_UM:
        raise SlideError(
            f"{slide.path}: {side_um:.1f} µm across, too small to hold nuclei with their surroundings "
            f"(at least {MIN_SIDE_UM:.0f} µm)"
        )
    out_dir = prepare_output(out_dir)
    model = load_model(config.model.name)  # workers load their own copy; here for metadata and checksum
    bounds = slide.bounds
    frame = SlideFrame(slide_mpp, model.metadata.mpp, bounds.x, bounds.y)
    tissue, _ = find_tissue(slide, config)
    if not tissue.mask.any():
        raise SlideError(f"{slide.path}: no tissue found")
    # With a region of interest, the work also covers mask pixels cut by its outline (their centre is outside).
    work_mask = tissue.mask
    if roi is not None:
        tissue = tissue_in_roi(slide, tissue, roi)
        work_mask = ndimage.binary_dilation(tissue.mask, np.ones((3, 3), bool)) & work_mask
    if tissue.darkfield:
        log.warning(
            "%s: a dark background, as in fluorescence: the model was trained on brightfield H&E and IHC, "
            "so its nuclei here are unvalidated and its classes and stain measurements do not apply",
            slide.path,
        )
    quality = input_quality(sample_tissue_tiles(slide, tissue, mpp=model.metadata.mpp), tissue.darkfield)
    for warning in quality["warnings"]:
        log.warning("%s: %s", slide.path, warning)
    width_px, height_px = frame.model_size_px(bounds.width, bounds.height)
    tiling = config.tiling
    patches = PatchGrid(config.model.patch_px, config.model.context_px)
    grid = Grid(width_px, height_px, tiling.tile_px, tiling.region_px, tiling.margin_px, patches)
    has_tissue = tissue_tiles(grid, work_mask, frame.level0_per_model_px / tissue.level0_per_px)
    regions, tiles = plan_work(grid, has_tissue)
    stat = slide.path.stat()
    identity = {
        "slide": slide.path.name,
        "size": stat.st_size,
        "mtime": int(stat.st_mtime),
        "slide_mpp": slide.mpp,
        "model_mpp": model.metadata.mpp,
        "tile_px": tiling.tile_px,
        "block_px": tiling.region_px,
        "roi": roi.digest if roi else None,
    }
    return SlidePlan(
        slide,
        out_dir,
        model.metadata,
        model.sha256,
        frame,
        tissue,
        grid,
        regions,
        tiles,
        has_tissue,
        out_dir / "store.zarr",
        identity,
        mpp,
        slide_stains(slide, tissue, config),
        roi,
        quality,
    )


def open_store(plan: SlidePlan) -> None:
    """Reuse the plan's zarr store if it was made for the same slide and settings, else create it empty."""
    grid = plan.grid
    if ngff.open_image_store(plan.store_path, plan.store_identity) is None:
        ngff.create_image_store(
            plan.store_path,
            plan.slide.path.stem,
            grid.width_px,
            grid.height_px,
            grid.tile_px,
            grid.region_px,
            plan.metadata.mpp,
            plan.store_identity,
        )

"""segment_slide(): slide -> tissue -> (zarr tiles -> region tasks) -> stitched nuclei -> GeoJSON, summary, overlay."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack, closing
from pathlib import Path

import numpy as np
import shapely
from PIL import Image
from scipy import ndimage

from pathoseg import __version__
from pathoseg.config import Config, as_dict
from pathoseg.distributed import RegionRunner, open_runner, peak_rss_bytes
from pathoseg.geometry import Box, PatchGrid, SlideFrame
from pathoseg.io import ngff
from pathoseg.io.annotations import RegionOfInterest, read_roi
from pathoseg.io.files import full_disk_reported, output_lock, prepare_output
from pathoseg.io.regions import intact_regions, load_region, save_region
from pathoseg.io.report import write_report
from pathoseg.io.slide import Slide, SlideError, open_slide
from pathoseg.measure.areas import annotation_stats, positivity_hotspot, review_squares, tissue_region_stats
from pathoseg.measure.biomarkers import (
    DAB_BIN_COLORS,
    DAB_BIN_NAMES,
    class_summary,
    dab_bins,
    positivity_certainty,
)
from pathoseg.measure.quality import FLAG_COLORS, MIN_SIDE_UM, QualityMap, input_quality
from pathoseg.measure.stain import StainEstimate, estimate_hdab_vectors
from pathoseg.models.weights import ModelMetadata, load_model
from pathoseg.outputs import (
    NucleusStyle,
    draw_crop,
    flagged_areas,
    region_geojson_fragment,
    write_config,
    write_geojson,
    write_json,
    write_nuclei_table,
    write_overlay,
    write_quality_map,
    write_review_geojson,
    write_summary_csv,
)
from pathoseg.region import RegionSettings, timed
from pathoseg.summary import (
    SlideSummary,
    choose_stain_mode,
    grid_facts,
    ihc_facts,
    model_facts,
    run_facts,
    slide_facts,
    tissue_facts,
)
from pathoseg.tiling.grid import Grid, plan_work, tiles_by_block, tissue_tiles
from pathoseg.tiling.tiler import TileJob, tile_block
from pathoseg.tiling.tissue import TissueMask, find_tissue, sample_tissue_tiles, tissue_in_roi

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done_increment, total)


def _reset_stale_results(nuclei_dir: Path, identity: dict) -> None:
    """Drop per-region results computed with other settings or another model."""
    marker = nuclei_dir / "identity.json"
    if nuclei_dir.is_dir() and (not marker.is_file() or json.loads(marker.read_text()) != identity):
        shutil.rmtree(nuclei_dir)
    nuclei_dir.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        marker.write_text(json.dumps(identity))


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
    if slide.mpp is None:
        raise SlideError(f"{slide.path}: the file carries no pixel size; give it with --mpp")
    side_um = min(slide.bounds.width, slide.bounds.height) * slide.mpp
    if side_um < MIN_SIDE_UM:
        raise SlideError(
            f"{slide.path}: {side_um:.1f} µm across, too small to hold nuclei with their surroundings "
            f"(at least {MIN_SIDE_UM:.0f} µm)"
        )
    out_dir = prepare_output(out_dir)
    model = load_model(config.model.name)  # workers load their own copy; here for metadata and checksum
    bounds = slide.bounds
    frame = SlideFrame(slide.mpp, model.metadata.mpp, bounds.x, bounds.y)
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


def run_regions(plan: SlidePlan, config: Config, progress: Progress, runner: RegionRunner) -> dict:
    """Tile what the unfinished regions need and run them on ``runner``, saving each result as it arrives.

    Returns facts for the summary's ``run``: regions computed now, the largest worker's peak RSS, where the
    region tasks' time went (seconds summed over tasks), and the device, runtime and precision of the workers.
    """
    open_store(plan)
    settings = RegionSettings.from_config(config, plan.metadata.mpp)
    if plan.stains is not None:
        settings = settings.with_stain_matrix(plan.stains.matrix)
    if plan.roi is not None:
        settings = settings.with_roi(shapely.transform(plan.roi.region, plan.frame.level0_to_model))
    _reset_stale_results(
        plan.nuclei_dir,
        {
            "model_sha256": plan.model_sha256,
            "settings": repr(settings),
            "region_px": plan.grid.region_px,
            "margin_px": plan.grid.margin_px,
            "patches": repr(plan.grid.patches),
            "store": plan.store_identity,
        },
    )
    done = intact_regions(plan.nuclei_dir)
    todo = [region for region in plan.regions if region.index not in done]
    grid = plan.grid
    needed = {block for region in todo for block in grid.blocks_in(region.reads)}
    block_tiles = {
        block: tiles
        for block, tiles in tiles_by_block(grid, plan.tiles).items()
        if block in needed and not ngff.block_intact(plan.store_path, block, grid.block_box(block))
    }
    n_tiles = sum(len(tiles) for tiles in block_tiles.values())
    progress("tiles", 0, n_tiles)
    progress("regions", len(plan.regions) - len(todo), len(plan.regions))

    stage_seconds: dict[str, float] = {}

    def on_result(result):
        save_region(plan.nuclei_dir, result)
        for stage, seconds in result.seconds.items():
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + seconds
        progress("regions", 1, len(plan.regions))

    job = plan.tile_job()
    if plan.slide.decodes_whole:
        # Every worker reading this slide would decode all of it: the client, which holds it already, tiles it.
        for block, tiles in block_tiles.items():
            progress("tiles", tile_block(job, block, tiles, plan.slide), n_tiles)
        block_tiles = {}
    runner.check_workers(readable=[plan.slide.path.resolve()], writable=[plan.store_path.resolve()])
    runner.run(job, block_tiles, todo, settings, on_result, on_tiles=lambda n: progress("tiles", n, n_tiles))
    return {
        "regions_computed": len(todo),
        "peak_rss_mb_worker": round(runner.worker_peak_rss_bytes() / 2**20, 1),
        "task_seconds": {stage: round(value, 2) for stage, value in stage_seconds.items()},
        **runner.engine_facts(),
    }


def segment_slide(
    slide_path: str | Path,
    out_dir: str | Path,
    config: Config,
    mpp: float | None = None,
    progress: Progress | None = None,
    runner: RegionRunner | None = None,
    roi_path: str | Path | None = None,
) -> dict:
    """Segment every nucleus of a slide (inside the annotations of ``roi_path``, a GeoJSON file, when given);
    writes the outputs into ``out_dir`` and returns the summary.

    ``runner`` lets a batch share one cluster across slides (default: open one for ``config.cluster``).
    Raises SlideError (bad slide, no pixel size, no tissue), AnnotationError, OutputError (DiskFullError when the
    disk fills up), CheckpointError.
    """
    started = time.time()
    progress = progress or (lambda stage, n, total: None)
    # the client's wall time per phase (cluster: starting the embedded one; regions: tiling + region tasks)
    seconds: dict[str, float] = {}
    with timed(seconds, "plan"):
        plan = plan_slide(slide_path, out_dir, config, mpp, roi_path)
    with closing(plan.slide), output_lock(plan.out_dir), full_disk_reported(plan.out_dir):
        return finish_slide(plan, config, started, seconds, progress, runner)


def finish_slide(
    plan: SlidePlan,
    config: Config,
    started: float,
    seconds: dict[str, float],
    progress: Progress,
    runner: RegionRunner | None,
) -> dict:
    """``segment_slide`` once planned and its output folder locked: regions, then every output."""
    with ExitStack() as stack:
        with timed(seconds, "cluster"):
            active = runner or stack.enter_context(open_runner(config.cluster, config.model, len(plan.regions)))
        with timed(seconds, "regions"):
            region_facts = run_regions(plan, config, progress, active)
        with timed(seconds, "outputs"):
            summary, columns = write_slide_outputs(plan, config, active)
    summary.grid = grid_facts(plan.grid, len(plan.tiles), len(plan.regions))
    summary.run = run_facts(
        time.time() - started,
        plan.tissue.area_mm2,
        plan.metadata.mpp,
        seconds,
        peak_rss_bytes(),
        region_facts,
        len(plan.regions),
        config.cluster.scheduler,
        __version__,
    )
    if not config.output.keep_store_pixels:
        freed = ngff.drop_pixels(plan.store_path)
        log.info("%s: %.1f MB of pixels dropped (output.keep_store_pixels: false)", plan.store_path, freed / 2**20)
    summary.outputs["store_pixels"] = "kept" if config.output.keep_store_pixels else "dropped"
    write_config(plan.out_dir / "config.yaml", as_dict(config), f"pathoseg {__version__} on {plan.slide.path.name}")
    summary.outputs["config"] = "config.yaml"
    figures = summary.as_dict()
    write_slide_report(plan, config, figures, columns)
    write_summary_csv(plan.out_dir / "summary.csv", figures)
    write_json(plan.out_dir / "summary.json", figures)  # last: its presence marks a finished slide
    return figures


COLUMNS = (
    "class_id",
    "area_um2",
    "hematoxylin_od_mean",
    "eosin_od_mean",
    "dab_od_mean",
    "detection_probability",
    "class_probability",
)


def collect_columns(plan: SlidePlan) -> tuple[dict[str, np.ndarray], dict[str, int], QualityMap]:
    """One pass over the region files: the (N,) per-nucleus columns the summary and report need (and
    ``centroids_level0``, (N, 2)), the plausibility filters' counts and the tile QC map."""
    parts: dict[str, list[np.ndarray]] = {key: [] for key in (*COLUMNS, "centroids")}
    removed: dict[str, int] = {}
    quality_rows = []
    for region in plan.regions:
        result = load_region(plan.nuclei_dir, region.index)
        quality_rows.append(result.quality)
        for key in COLUMNS:
            parts[key].append(result.measurements.get(key, np.zeros(0)))
        parts["centroids"].append(result.centroids.reshape(-1, 2))
        for key, value in result.removed.items():
            removed[key] = removed.get(key, 0) + value
    columns = {key: np.concatenate(values) if values else np.zeros(0) for key, values in parts.items()}
    centroids = columns.pop("centroids").reshape(-1, 2)
    columns["centroids_level0"] = plan.frame.model_to_level0(centroids)
    columns["class_id"] = columns["class_id"].astype(int)
    quality = QualityMap.from_regions(
        quality_rows, plan.has_tissue, plan.grid.tile_px, plan.metadata.mpp, plan.tissue.darkfield
    )
    return columns, removed, quality


def write_slide_outputs(
    plan: SlidePlan, config: Config, runner: RegionRunner
) -> tuple[SlideSummary, dict[str, np.ndarray]]:
    """GeoJSON (its regions rendered on ``runner``'s workers), overlay, review squares and the summary's counts, from
    the saved per-region results.

    Returns the summary (without run figures) and the per-nucleus columns of ``collect_columns``.
    """
    slide, out_dir, frame, metadata, tissue = plan.slide, plan.out_dir, plan.frame, plan.metadata, plan.tissue

    def results():
        return (load_region(plan.nuclei_dir, region.index) for region in plan.regions)

    columns, removed, quality = collect_columns(plan)
    stain_mode = choose_stain_mode(config, columns["eosin_od_mean"])
    names = metadata.class_names
    thresholds = config.stain.dab_thresholds
    style = NucleusStyle.of(names, metadata.class_colors, stain_mode, thresholds)
    suffix = ".geojson.gz" if config.output.gzip else ".geojson"
    render = functools.partial(
        region_geojson_fragment,
        str(plan.nuclei_dir.resolve()),
        frame=frame,
        slide_key=slide.path.name,
        style=style,
        compress=config.output.gzip,
    )
    geojson = write_geojson(
        out_dir / f"nuclei{suffix}", runner.map_in_order(render, [region.index for region in plan.regions])
    )
    if config.output.table:
        write_nuclei_table(out_dir / "nuclei.csv", results(), frame, style)
    bounds = slide.bounds
    overlay_side = min(config.output.overlay_max_px, max(bounds.width, bounds.height))
    thumbnail, level0_per_thumb_px = slide.thumbnail(overlay_side)
    write_overlay(
        out_dir / "overlay.png",
        thumbnail,
        level0_per_thumb_px,
        results(),
        frame,
        style,
        plan.roi.region if plan.roi else None,
    )
    bins = dab_bins(columns["dab_od_mean"], tuple(thresholds)) if stain_mode == "ihc" else None
    origin = (frame.origin_x, frame.origin_y)
    centroids = columns["centroids_level0"]
    # Review first where the model is unsure: of the nucleus and its class, or in IHC of the positive/negative call.
    certainty = (
        positivity_certainty(columns["dab_od_mean"], thresholds[0])
        if stain_mode == "ihc"
        else columns["class_probability"]
    )
    review = review_squares(
        centroids, columns["detection_probability"] * certainty, slide.mpp, origin, config.output.review_square_um
    )
    hotspot = (
        None
        if bins is None
        else positivity_hotspot(
            centroids, bins > 0, slide.mpp, origin, config.stain.hotspot_field_um, config.stain.hotspot_min_nuclei
        )
    )
    quality_areas = flagged_areas(quality, frame, plan.grid.width_px, plan.grid.height_px)
    review_written = write_review_geojson(
        out_dir / "review.geojson", review["squares"], slide.path.name, slide.bounds, hotspot, quality_areas, quality
    )
    write_quality_map(out_dir / "quality.png", thumbnail, level0_per_thumb_px, quality, frame)
    tile_warnings = quality.warnings()
    for warning in tile_warnings:
        log.warning("%s: %s", slide.path, warning)
    stain_vectors = (
        plan.stains.as_dict() if plan.stains else {"source": "configured" if config.stain.stain_matrix else "default"}
    )
    summary = SlideSummary(
        slide=slide_facts(slide),
        model=model_facts(metadata, plan.model_sha256),
        tissue=tissue_facts(tissue),
        quality={**plan.quality, "warnings": plan.quality["warnings"] + tile_warnings, "tiles": quality.summary()},
        stain_mode=stain_mode,
        stain_vectors=stain_vectors,
        nuclei=geojson["written"],
        counts=class_summary(columns["class_id"], names, tissue.area_mm2),
        filtered_out={
            **removed,
            "outline_invalid_on_qupath_grid": geojson["dropped"],
            "review_areas_invalid_on_qupath_grid": review_written["dropped"],
        },
        outlines_repaired_on_qupath_grid=geojson["repaired"],
        tissue_regions=tissue_region_stats(tissue, origin, centroids, columns["class_id"], names, bins),
        review=review,
        outputs={
            "geojson": f"nuclei{suffix}",
            "overlay": "overlay.png",
            "report": "report.html",
            "review": "review.geojson",
            "quality_map": "quality.png",
            "store": "store.zarr",
        },
    )
    if plan.roi is not None:
        summary.roi = {
            "file": str(plan.roi.path),
            "annotations": annotation_stats(
                plan.roi.annotations, tissue, origin, centroids, columns["class_id"], names, slide.mpp, bins
            ),
        }
    if bins is not None:
        summary.ihc = ihc_facts(bins, columns["dab_od_mean"], thresholds, hotspot)
    return summary, columns


def write_slide_report(plan: SlidePlan, config: Config, summary: dict, columns: dict[str, np.ndarray]) -> None:
    """report.html: the overlay, a full-resolution crop of the densest square, counts, histograms, review list."""
    frame, metadata = plan.frame, plan.metadata
    names, colors = metadata.class_names, metadata.class_colors
    crop = None
    densest = summary["review"]["densest"]
    if densest is not None:
        x, y, side, _ = densest["bbox_level0"]
        bounds = plan.slide.bounds
        width, height = min(2 * side, bounds.width), min(2 * side, bounds.height)
        box = Box(
            int(np.clip(x - side / 2, bounds.x, bounds.x1 - width)),
            int(np.clip(y - side / 2, bounds.y, bounds.y1 - height)),
            width,
            height,
        )
        model_box = frame.level0_box_to_model(box)
        touching = [region.index for region in plan.regions if region.window.intersects(model_box)]
        style = NucleusStyle.of(names, colors, summary["stain_mode"], config.stain.dab_thresholds)
        crop = draw_crop(plan.slide, box, (load_region(plan.nuclei_dir, i) for i in touching), frame, style)
    swatches = {
        **dict(zip(names, colors)),
        **dict(zip(DAB_BIN_NAMES, DAB_BIN_COLORS)),
        **{f"qc:{check}": color for check, color in FLAG_COLORS.items()},
    }
    with Image.open(plan.out_dir / "overlay.png") as overlay, Image.open(plan.out_dir / "quality.png") as quality_map:
        write_report(plan.out_dir / "report.html", summary, columns, overlay.copy(), crop, swatches, quality_map.copy())

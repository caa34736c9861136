"""segment_slide(): slide -> tissue -> (zarr tiles -> region tasks) -> stitched nuclei -> GeoJSON, summary, overlay."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack, closing
from pathlib import Path

import shapely

from pathoseg import __version__
from pathoseg.config import Config, as_dict
from pathoseg.distributed import RegionRunner, open_runner, peak_rss_bytes
from pathoseg.io import ngff
from pathoseg.io.files import full_disk_reported, output_lock
from pathoseg.io.regions import RegionResult, intact_regions, save_region
from pathoseg.outputs import write_config, write_json, write_slide_outputs, write_slide_report, write_summary_csv
from pathoseg.plan import SlidePlan, open_store, plan_slide
from pathoseg.region import RegionSettings, timed
from pathoseg.summary import grid_facts, run_facts
from pathoseg.tiling.grid import tiles_by_block
from pathoseg.tiling.tiler import tile_block

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

    def on_result(result: RegionResult) -> None:
        """Keep a finished region's result on disk and add up its stage times."""
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
            summary, columns = write_slide_outputs(plan, config, active.map_in_order)
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

"""summary.json: a slide's figures as one declared structure, built once by the pipeline; summary.csv, the report,
the batch table and the command line read its ``as_dict()``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from pathoseg.config import Config, StainConfig
from pathoseg.geometry import area_throughput
from pathoseg.io.slide import Slide
from pathoseg.measure.biomarkers import index_range_of_uncertain, positivity_certainty, positivity_summary
from pathoseg.models.weights import ModelMetadata
from pathoseg.tiling.grid import Grid
from pathoseg.tiling.tissue import TissueMask

SCHEMA_VERSION = 1


@dataclass
class SlideSummary:
    """What summary.json holds, in its order (``schema_version`` first, then these; absent optional parts left out).

    slide : path, vendor, dimensions, levels, mpp and its source, objective power, level-0 bounds (``slide_facts``).
    model : name, sha256, encoder, mpp, classes. tissue : area (mm²), fraction, mask mpp, darkfield.
    quality : the slide-level input checks, every QC warning, ``tiles`` (``measure.quality.QualityMap.summary``) and
    ``mpp_check``, the pixel size the nuclei suggest (``measure.magnification.mpp_check``; None on fluorescence).
    stain_mode : ``he`` or ``ihc``; stain_vectors : their source (and the slide's own vectors where estimated).
    nuclei : nuclei written; counts : ``measure.biomarkers.class_summary``.
    filtered_out : nuclei dropped per plausibility filter and geometry left empty on QuPath's grid.
    outlines_repaired_on_qupath_grid : outlines snap-rounded into valid ones.
    tissue_regions : per connected piece of tissue; review : review squares (``measure.areas.review_squares``).
    outputs : the files written. roi : per annotation of ``--roi``. ihc : positivity, H-score, the index range with
    the uncertain nuclei counted both ways (``ihc_facts``), hotspot.
    grid : tiles, regions and their sizes. run : time, speed, memory, workers, precision.
    """

    slide: dict
    model: dict
    tissue: dict
    quality: dict
    stain_mode: str
    stain_vectors: dict
    nuclei: int
    counts: dict
    filtered_out: dict
    outlines_repaired_on_qupath_grid: int
    tissue_regions: list
    review: dict
    outputs: dict
    roi: dict | None = None
    ihc: dict | None = None
    grid: dict | None = None
    run: dict | None = None

    def as_dict(self) -> dict:
        """summary.json's content (NaN as null)."""
        figures = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        return {"schema_version": SCHEMA_VERSION, **{key: value for key, value in figures.items() if value is not None}}


def slide_facts(slide: Slide) -> dict:
    """The slide's file, vendor, size, pixel size (and its source) and bounds."""
    bounds = slide.bounds
    return {
        "path": str(slide.path),
        "vendor": slide.vendor,
        "dimensions": list(slide.dimensions),
        "levels": len(slide.level_dimensions),
        "mpp": slide.mpp,
        "mpp_source": slide.mpp_source,
        "objective_power": slide.objective_power,
        "bounds": [bounds.x, bounds.y, bounds.width, bounds.height],
    }


def model_facts(metadata: ModelMetadata, sha256: str) -> dict:
    """The model's name, version, checksum, resolution and classes."""
    return {
        "name": metadata.name,
        "sha256": sha256,
        "encoder": metadata.encoder,
        "mpp": metadata.mpp,
        "classes": metadata.class_names[1:],
    }


def tissue_facts(tissue: TissueMask) -> dict:
    """The tissue's area, its share of the slide and whether it looks like darkfield."""
    return {
        "area_mm2": round(tissue.area_mm2, 4),
        "fraction": round(tissue.fraction, 4),
        "mask_mpp": round(tissue.mpp, 3),
        "darkfield": tissue.darkfield,
    }


def choose_stain_mode(config: Config, eosin_od_means: np.ndarray) -> str:
    """``he`` or ``ihc``; ``auto`` calls a slide IHC when its nuclei carry almost no eosin.

    (DAB positivity cannot decide it: hematoxylin + eosin purple projects partly onto the DAB vector.)
    """
    if config.stain.mode in ("he", "ihc"):
        return config.stain.mode
    if eosin_od_means.size == 0:
        return "he"
    return "ihc" if float(np.median(eosin_od_means)) < config.stain.ihc_max_eosin_od else "he"


def ihc_facts(
    bins: np.ndarray,
    dab_od_means: np.ndarray,
    detection_probability: np.ndarray,
    stain: StainConfig,
    hotspot: dict | None,
) -> dict:
    """Positivity of (N,) DAB bins; the nuclei whose call is borderline (certainty under 0.5) and those detected with
    probability under ``stain.unsure_detection_probability``, and the index range they allow; the hotspot."""
    borderline = positivity_certainty(dab_od_means, stain.positive_dab_od) < 0.5
    unsure = detection_probability < stain.unsure_detection_probability
    return {
        **positivity_summary(bins),
        "positive_percent_uncertain_range": index_range_of_uncertain(bins > 0, borderline, unsure),
        "dab_thresholds": stain.dab_thresholds,
        "borderline_nuclei": int(borderline.sum()),
        "unsure_detections": int(unsure.sum()),
        "hotspot": hotspot,
    }


def grid_facts(grid: Grid, n_tiles: int, n_regions: int) -> dict:
    """How the slide was cut: tiles, regions and their sizes in model pixels."""
    return {
        "tiles": n_tiles,
        "regions": n_regions,
        "tile_px": grid.tile_px,
        "region_px": grid.region_px,
        "margin_px": grid.margin_px,
        "model_width_px": grid.width_px,
        "model_height_px": grid.height_px,
    }


def run_facts(
    seconds: float,
    tissue_mm2: float,
    model_mpp: float,
    client_seconds: dict[str, float],
    peak_rss_bytes: int,
    region_facts: dict,
    n_regions: int,
    scheduler: str,
    version: str,
) -> dict:
    """The run's time and speed (``area_throughput``), the client's phases and memory, the region tasks'
    ``region_facts`` (``pipeline.run_regions``), regions reused from an earlier run."""
    return {
        "seconds": round(seconds, 2),
        **area_throughput(tissue_mm2, model_mpp, seconds),
        "client_seconds": {phase: round(value, 2) for phase, value in client_seconds.items()},
        "peak_rss_mb_client": round(peak_rss_bytes / 2**20, 1),
        **region_facts,
        "regions_reused": n_regions - region_facts["regions_computed"],
        "scheduler": scheduler,
        "pathoseg_version": version,
    }

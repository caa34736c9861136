"""Slide-level outputs from region results: QuPath GeoJSON, summary.json / .csv, overlay.png, review squares."""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import yaml
from PIL import Image

from pathoseg.config import Config
from pathoseg.geometry import Box, SlideFrame
from pathoseg.io.files import atomic_path
from pathoseg.io.geojson import (
    FeatureCollectionWriter,
    annotation_feature,
    encode_fragment,
    features_text,
    nucleus_feature,
    snap_rings,
)
from pathoseg.io.overlay import draw_dots, draw_overlay, save_png
from pathoseg.io.regions import RegionResult, load_region
from pathoseg.io.report import write_report
from pathoseg.io.slide import Slide
from pathoseg.measure.areas import annotation_stats, positivity_hotspot, review_squares, tissue_region_stats
from pathoseg.measure.biomarkers import DAB_BIN_COLORS, DAB_BIN_NAMES, class_summary, dab_bins, positivity_certainty
from pathoseg.measure.magnification import mpp_check
from pathoseg.measure.nuclei import MEASUREMENT_NAMES
from pathoseg.measure.quality import FLAG_COLORS, QualityMap
from pathoseg.plan import SlidePlan
from pathoseg.summary import (
    SlideSummary,
    choose_stain_mode,
    ihc_facts,
    model_facts,
    slide_facts,
    tissue_facts,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NucleusStyle:
    """How every output names and colours nuclei: by the model's class, or in IHC mode by DAB bin (QuPath's
    ``Negative`` / ``1+`` / ``2+`` / ``3+`` at ``dab_thresholds``).

    class_names, class_colors : the model's classes (index 0 background) and their [r, g, b] colours.
    """

    class_names: tuple[str, ...]
    class_colors: tuple[tuple[int, ...], ...]
    stain_mode: str
    dab_thresholds: tuple[float, ...]

    @classmethod
    def of(
        cls, class_names: list[str], class_colors: list[list[int]], stain_mode: str, dab_thresholds: list[float]
    ) -> NucleusStyle:
        """The style of a run: its model's class names and colours, stain mode and DAB thresholds."""
        return cls(
            tuple(class_names),
            tuple(tuple(int(c) for c in color) for color in class_colors),
            stain_mode,
            tuple(dab_thresholds),
        )

    def labels(self, result: RegionResult) -> tuple[list[str], list[list[int]], np.ndarray | None]:
        """Classification name and [r, g, b] colour of each of a region's nuclei, and its DAB bin (IHC mode)."""
        if self.stain_mode == "ihc":
            bins = dab_bins(result.measurements["dab_od_mean"], self.dab_thresholds)
            return [DAB_BIN_NAMES[b] for b in bins], [DAB_BIN_COLORS[b] for b in bins], bins
        ids = result.measurements["class_id"].astype(int)
        return [self.class_names[i] for i in ids], [list(self.class_colors[i]) for i in ids], None


def region_geojson_fragment(
    nuclei_dir: str, index: int, frame: SlideFrame, slide_key: str, style: NucleusStyle, compress: bool
) -> tuple[int, bytes, int, int]:
    """A saved region's nuclei as QuPath detections in level-0 pixels, outlines snapped to QuPath's grid
    (``snap_rings``), for ``FeatureCollectionWriter.write_fragment``: (number of nuclei written, ``encode_fragment``
    of their Feature texts, outlines repaired, nuclei dropped). Runs on a worker, or here without a cluster."""
    result = load_region(Path(nuclei_dir), index)
    names, colors, _ = style.labels(result)
    centroids = frame.model_to_level0(result.centroids.reshape(-1, 2))
    measurements = {name: result.measurements[key] for key, name in MEASUREMENT_NAMES.items()}
    if style.stain_mode == "ihc":
        measurements["Model class"] = result.measurements["class_id"].astype(float)
    rings, repaired = snap_rings([frame.model_to_level0(ring) for ring in result.polygons])
    features = [
        nucleus_feature(
            ring,
            names[i],
            colors[i],
            {name: values[i] for name, values in measurements.items()},
            f"{slide_key}:{centroids[i, 0]:.2f}:{centroids[i, 1]:.2f}",
        )
        for i, ring in enumerate(rings)
        if ring is not None
    ]
    return len(features), encode_fragment(features_text(features), compress), repaired, len(rings) - len(features)


def write_geojson(path: Path, fragments: Iterable[tuple[int, bytes, int, int]]) -> dict[str, int]:
    """The nuclei GeoJSON from every region's ``region_geojson_fragment``, in order; returns how many nuclei were
    written, and how many outlines snapping to QuPath's grid made invalid: repaired, or dropped where nothing
    was left."""
    repaired = dropped = 0
    with FeatureCollectionWriter(path) as writer:
        for count, fragment, region_repaired, region_dropped in fragments:
            writer.write_fragment(fragment, count)
            repaired, dropped = repaired + region_repaired, dropped + region_dropped
    return {"written": writer.count, "repaired": repaired, "dropped": dropped}


def write_nuclei_table(path: Path, results: Iterable[RegionResult], frame: SlideFrame, style: NucleusStyle) -> int:
    """One CSV row per nucleus: level-0 centroid, class, and every measurement (streamed, atomic)."""
    columns = ["centroid_x", "centroid_y", "class", "model_class", *MEASUREMENT_NAMES]
    count = 0
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for result in results:
            names, _, _ = style.labels(result)
            xy = frame.model_to_level0(result.centroids) if len(result.centroids) else result.centroids
            for i, name in enumerate(names):
                model_class = style.class_names[int(result.measurements["class_id"][i])]
                writer.writerow(
                    [
                        f"{xy[i, 0]:.2f}",
                        f"{xy[i, 1]:.2f}",
                        name,
                        model_class,
                        *(f"{float(result.measurements[key][i]):.5g}" for key in MEASUREMENT_NAMES),
                    ]
                )
                count += 1
    return count


def json_safe(value: Any) -> Any:
    """``value`` with NaN floats replaced by None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically (numpy numbers as floats)."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, default=float))


def flatten(data: dict, prefix: str = "") -> dict:
    """Nested dict -> {"a.b.c": scalar}; lists become JSON strings."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


def write_config(path: Path, settings: dict, command: str) -> None:
    """The run's whole configuration as YAML, which ``-c`` takes back: the record of what was measured, and how."""
    header = f"# The configuration of this run ({command}); `-c` with this file repeats it.\n"
    with atomic_path(path) as temporary:
        temporary.write_text(header + yaml.safe_dump(settings, sort_keys=False, allow_unicode=True))


def write_summary_csv(path: Path, summary: dict) -> None:
    """One header row and one value row: the flattened summary (an archive table concatenates these)."""
    flat = flatten(summary)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(flat))
    writer.writeheader()
    writer.writerow(flat)
    with atomic_path(path) as temporary:
        temporary.write_text(buffer.getvalue())


def level0_outlines(
    results: Iterable[RegionResult], frame: SlideFrame, style: NucleusStyle, box: Box | None = None
) -> Iterator[tuple[np.ndarray, list[int]]]:
    """(ring (K, 2), colour) of each nucleus, in level-0 pixels relative to ``box``'s corner (default: the slide's
    bounds); with ``box`` (level-0), only the nuclei whose centroid lies in it."""
    corner = np.array([box.x, box.y] if box else [frame.origin_x, frame.origin_y], float)
    for result in results:
        _, colors, _ = style.labels(result)
        keep: Iterable[int] = range(len(result))
        if box is not None:
            centres = frame.model_to_level0(result.centroids.reshape(-1, 2))
            keep = np.nonzero(box.contains(centres[:, 0], centres[:, 1]))[0]
        for i in keep:
            yield frame.model_to_level0(result.polygons[i]) - corner, colors[i]


ROI_COLOR = [255, 190, 0]
# Below this many overlay pixels across a typical nucleus (8 µm), nuclei are drawn as coloured dots, not outlines.
MIN_OUTLINED_NUCLEUS_PX = 3.0


def level0_centroids(
    results: Iterable[RegionResult], frame: SlideFrame, style: NucleusStyle
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per region: (N, 2) nucleus centroids in level-0 pixels relative to the slide's bounds, (N, 3) their colours."""
    corner = np.array([frame.origin_x, frame.origin_y], float)
    for result in results:
        _, colors, _ = style.labels(result)
        yield frame.model_to_level0(result.centroids.reshape(-1, 2)) - corner, np.array(colors).reshape(-1, 3)


def write_overlay(
    path: Path,
    thumbnail: np.ndarray,
    level0_per_thumb_px: float,
    results: Iterable[RegionResult],
    frame: SlideFrame,
    style: NucleusStyle,
    roi: shapely.Geometry | None = None,
) -> None:
    """Thumbnail of the bounded region with nucleus outlines coloured by class (or DAB bin), or coloured dots where
    nuclei are too small to outline at the thumbnail's scale (a whole slide), and the outline of the region of
    interest ((Multi)Polygon, level-0 pixels) where there is one."""
    scale = 1 / level0_per_thumb_px
    corner = np.array([frame.origin_x, frame.origin_y])
    roi_rings = (
        []
        if roi is None
        else [
            (np.asarray(ring.coords) - corner, ROI_COLOR)
            for polygon in shapely.get_parts(roi)
            for ring in (polygon.exterior, *polygon.interiors)
        ]
    )
    if 8.0 / frame.slide_mpp * scale < MIN_OUTLINED_NUCLEUS_PX:
        dots = draw_dots(thumbnail, level0_centroids(results, frame, style), scale)
        image = draw_overlay(np.asarray(dots), roi_rings, scale)
    else:
        outlines = level0_outlines(results, frame, style)
        image = draw_overlay(thumbnail, itertools.chain(outlines, roi_rings), scale)
    save_png(image, path)


HOTSPOT_COLOR = [200, 0, 0]


QC_NAMES = {"blur": "Out of focus", "ink": "Pen ink", "dark": "Dark or fold", "not_tissue": "Not tissue"}


def flagged_areas(quality: QualityMap, frame: SlideFrame) -> dict[str, shapely.Geometry]:
    """Per check that flags any tile: the flagged grid tiles merged into one (Multi)Polygon in level-0 pixels (the
    last row and column of tiles run past the slide's edge: ``write_review_geojson`` cuts them to it)."""
    tile_px, areas = quality.tile_px, {}
    for name, mask in quality.flags.items():
        rows, cols = np.nonzero(mask)
        if len(rows):
            tiles = shapely.box(cols * tile_px, rows * tile_px, (cols + 1) * tile_px, (rows + 1) * tile_px)
            areas[name] = shapely.transform(shapely.union_all(tiles), frame.model_to_level0)
    return areas


def _square(bbox_level0: list[int]) -> shapely.Polygon:
    x, y, w, h = bbox_level0
    return shapely.box(x, y, x + w, y + h)


def write_review_geojson(
    path: Path,
    squares: list[dict],
    slide_key: str,
    bounds_level0: Box,
    hotspot: dict | None = None,
    quality: QualityMap | None = None,
    frame: SlideFrame | None = None,
) -> dict[str, int]:
    """QuPath annotations to look at: the review squares named by rank and mean confidence, the IHC positivity
    hotspot (``measure.areas.positivity_hotspot``) where there is one, and the areas the tile checks of ``quality``
    flagged (``flagged_areas``, placed by ``frame``, with their figures), each cut to the slide's ``bounds_level0``
    (grid squares run past its edge). Every geometry valid on QuPath's grid; returns how many were ``written`` and
    ``dropped`` (nothing left after snapping)."""
    inside = shapely.box(bounds_level0.x, bounds_level0.y, bounds_level0.x1, bounds_level0.y1)

    def annotation(geometry: shapely.Geometry, *args: Any) -> dict | None:
        """An annotation feature of the part of ``geometry`` inside the slide (None when nothing is left)."""
        return annotation_feature(shapely.intersection(geometry, inside), *args)

    features = []
    if hotspot is not None:
        x, y = hotspot["bbox_level0"][:2]
        measurements = {
            "Nuclei": hotspot["n_nuclei"],
            "Positive": hotspot["positive"],
            "Positive %": round(hotspot["positive_percent"], 2),
        }
        features.append(
            annotation(
                _square(hotspot["bbox_level0"]),
                "Hotspot",
                HOTSPOT_COLOR,
                measurements,
                f"{slide_key}:hotspot:{x}:{y}",
                f"Hotspot: {hotspot['positive_percent']:.1f}% positive ({hotspot['positive']}/{hotspot['n_nuclei']})",
            )
        )
    for rank, square in enumerate(squares, start=1):
        x, y = square["bbox_level0"][:2]
        measurements = {
            "Nuclei": square["nuclei"],
            "Mean confidence": square["mean_confidence"],
            "Low-confidence %": square["low_confidence_percent"],
        }
        features.append(
            annotation(
                _square(square["bbox_level0"]),
                "Review",
                [255, 0, 255],
                measurements,
                f"{slide_key}:review:{x}:{y}",
                f"Review {rank}: mean confidence {square['mean_confidence']:.2f}",
            )
        )
    flagged = quality.summary()["flagged"] if quality is not None else {}
    for check, area in (flagged_areas(quality, frame) if quality is not None and frame is not None else {}).items():
        figures = flagged[check]
        measurements = {
            "Tiles": figures["tiles"],
            "Area mm^2": figures["area_mm2"],
            "Tissue tiles %": 100 * figures["fraction"],
        }
        features.append(
            annotation(
                area,
                f"QC: {QC_NAMES[check]}",
                FLAG_COLORS[check],
                measurements,
                f"{slide_key}:qc:{check}",
                f"QC: {QC_NAMES[check]}",
            )
        )
    with FeatureCollectionWriter(path) as writer:
        for feature in features:
            if feature is not None:
                writer.write(feature)
    return {"written": writer.count, "dropped": len(features) - writer.count}


def write_quality_map(
    path: Path, thumbnail: np.ndarray, level0_per_thumb_px: float, quality: QualityMap, frame: SlideFrame
) -> None:
    """quality.png: the thumbnail with the tiles each check flagged tinted in the check's ``FLAG_COLORS`` colour."""
    image = np.asarray(thumbnail, np.float32).copy()
    thumb_per_tile = quality.tile_px * frame.level0_per_model_px / level0_per_thumb_px
    for check, mask in quality.flags.items():
        for row, col in zip(*np.nonzero(mask)):
            cells = (
                slice(int(row * thumb_per_tile), int(np.ceil((row + 1) * thumb_per_tile))),
                slice(int(col * thumb_per_tile), int(np.ceil((col + 1) * thumb_per_tile))),
            )
            image[cells] = 0.45 * image[cells] + 0.55 * np.array(FLAG_COLORS[check], np.float32)
    save_png(Image.fromarray(image.clip(0, 255).astype(np.uint8)), path)


def draw_crop(
    slide: Slide,
    box_level0: Box,
    results: Iterable[RegionResult],
    frame: SlideFrame,
    style: NucleusStyle,
    max_side_px: int = 1024,
) -> Image.Image:
    """A crop of the slide (read at the finest level where it fits in ``max_side_px``) with the outlines of the
    nuclei whose centroid lies inside."""
    side = max(box_level0.width, box_level0.height)
    downsamples = slide.level_downsamples
    level = next((i for i, d in enumerate(downsamples) if side / d <= max_side_px), len(downsamples) - 1)
    downsample = downsamples[level]
    pixels = slide.read_region(
        box_level0.x, box_level0.y, level, int(box_level0.width / downsample), int(box_level0.height / downsample)
    )
    outlines = level0_outlines(results, frame, style, box_level0)
    return draw_overlay(pixels, outlines, 1 / downsample)


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
    plan: SlidePlan, config: Config, map_in_order: Callable[[Callable, list], Iterable]
) -> tuple[SlideSummary, dict[str, np.ndarray]]:
    """GeoJSON (its regions rendered by ``map_in_order``, on a cluster's workers), overlay, review squares, QC map
    and the summary's figures, from the saved per-region results.

    Returns the summary (without run figures) and the per-nucleus columns of ``collect_columns``.
    """
    slide, out_dir, frame, metadata, tissue = plan.slide, plan.out_dir, plan.frame, plan.metadata, plan.tissue

    def results() -> Iterator[RegionResult]:
        """The regions' results, read from disk one at a time."""
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
        out_dir / f"nuclei{suffix}", map_in_order(render, [region.index for region in plan.regions])
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
        centroids, columns["detection_probability"] * certainty, frame.slide_mpp, origin, config.output.review_square_um
    )
    hotspot = (
        None
        if bins is None
        else positivity_hotspot(
            centroids, bins > 0, frame.slide_mpp, origin, config.stain.hotspot_field_um, config.stain.hotspot_min_nuclei
        )
    )
    review_written = write_review_geojson(
        out_dir / "review.geojson", review["squares"], slide.path.name, slide.bounds, hotspot, quality, frame
    )
    write_quality_map(out_dir / "quality.png", thumbnail, level0_per_thumb_px, quality, frame)
    # Not on fluorescence: the reference areas are of brightfield nuclei, and the model is unvalidated there.
    magnification = (
        None
        if tissue.darkfield
        else mpp_check(
            columns["area_um2"],
            np.asarray(names, dtype=object)[columns["class_id"]],
            frame.slide_mpp,
            metadata.name,
            config.tiling.mpp_check_factor,
        )
    )
    run_warnings = quality.warnings() + (
        [magnification["warning"]] if magnification and magnification["warning"] else []
    )
    for warning in run_warnings:
        log.warning("%s: %s", slide.path, warning)
    stain_vectors = (
        plan.stains.as_dict() if plan.stains else {"source": "configured" if config.stain.stain_matrix else "default"}
    )
    summary = SlideSummary(
        slide=slide_facts(slide),
        model=model_facts(metadata, plan.model_sha256),
        tissue=tissue_facts(tissue),
        quality={
            **plan.quality,
            "warnings": plan.quality["warnings"] + run_warnings,
            "tiles": quality.summary(),
            "mpp_check": magnification,
        },
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
                plan.roi.annotations, tissue, origin, centroids, columns["class_id"], names, frame.slide_mpp, bins
            ),
        }
    if bins is not None:
        summary.ihc = ihc_facts(bins, columns["dab_od_mean"], columns["detection_probability"], config.stain, hotspot)
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

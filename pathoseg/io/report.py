"""report.html: one self-contained page per slide (images embedded) for a pathologist to open in a browser."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from html import escape
from pathlib import Path

import numpy as np
from PIL import Image

from pathoseg.io.files import atomic_path

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 0.25em 0.7em; border: 1px solid #ddd; }
th { background: #f3f3f3; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; } figure { margin: 0; } figcaption { font-size: 0.85em; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin-right: 0.4em; vertical-align: middle; }
.key { font-size: 1.3em; font-weight: 600; }
"""


def image_data_uri(image: Image.Image, max_side_px: int = 1200, quality: int = 85) -> str:
    """A ``data:image/jpeg;base64,...`` URI of ``image`` shrunk to ``max_side_px``."""
    image = image.convert("RGB")
    image.thumbnail((max_side_px, max_side_px))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def svg_histogram(
    values: np.ndarray,
    title: str,
    x_label: str,
    bins: int = 40,
    value_range: tuple[float, float] | None = None,
    thresholds: tuple[float, ...] = (),
    color: str = "#4a6fa5",
    width: int = 460,
    height: int = 220,
) -> str:
    """An inline SVG histogram of ``values`` (N,), with dashed lines at ``thresholds``."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if value_range is None:
        value_range = (0.0, float(np.percentile(values, 99.5)) if values.size else 1.0)
    low, high = value_range[0], max(value_range[1], value_range[0] + 1e-6)
    counts, edges = np.histogram(np.clip(values, low, high), bins=bins, range=(low, high))
    left, bottom, top = 45, height - 35, 25
    plot_w, plot_h = width - left - 10, bottom - top
    scale_y = plot_h / max(1, counts.max())
    bar_w = plot_w / bins
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="{left}" y="15" font-size="13" font-weight="600">{escape(title)}</text>',
        f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}" stroke="#444"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#444"/>',
    ]
    for i, count in enumerate(counts):
        bar_h = count * scale_y
        parts.append(
            f'<rect x="{left + i * bar_w:.1f}" y="{bottom - bar_h:.1f}" width="{max(bar_w - 1, 0.5):.1f}" '
            f'height="{bar_h:.1f}" fill="{color}"/>'
        )
    for threshold in thresholds:
        if low <= threshold <= high:
            x = left + (threshold - low) / (high - low) * plot_w
            parts.append(
                f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#c00" stroke-dasharray="4 3"/>'
            )
    for fraction in (0, 0.5, 1):
        x = left + fraction * plot_w
        parts.append(
            f'<text x="{x:.1f}" y="{bottom + 14}" font-size="11" text-anchor="middle">'
            f"{low + fraction * (high - low):.3g}</text>"
        )
    parts.append(f'<text x="{left - 5}" y="{top + 4}" font-size="11" text-anchor="end">{counts.max()}</text>')
    parts.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 4}" font-size="11" text-anchor="middle">'
        f"{escape(x_label)} (n = {values.size})</text></svg>"
    )
    return "".join(parts)


def _table(header: list[str], rows: list[list]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f'<td class="n">{value:,.4g}</td>' if abs(value) < 1e4 else f'<td class="n">{value:,.0f}</td>'
        if isinstance(value, int):
            return f'<td class="n">{value:,}</td>'
        return f"<td>{value}</td>"  # callers escape text

    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _percent_range(bounds: Sequence[float] | None) -> str:
    return "(not computed)" if bounds is None else f"{bounds[0]:.1f}&ndash;{bounds[1]:.1f}%"


def _swatch(color: Sequence[int]) -> str:
    return f'<span class="swatch" style="background: rgb({color[0]},{color[1]},{color[2]})"></span>'


def _counts_section(summary: dict, colors: dict[str, list[int]]) -> str:
    counts = summary["counts"]
    rows = [
        [
            _swatch(colors.get(name, [128, 128, 128])) + escape(name),
            c["count"],
            c["density_per_mm2"],
            100 * c["fraction"],
        ]
        for name, c in counts["classes"].items()
    ]
    rows.append(["<b>all nuclei</b>", counts["n_nuclei"], counts["density_per_mm2"], 100.0])
    html = _table(["class", "nuclei", "per mm² of tissue", "% of nuclei"], rows)
    if "ihc" in summary:
        ihc = summary["ihc"]
        low, high = ihc["positive_percent_ci95"]
        html = (
            f'<p class="key">{ihc["positive_percent"]:.1f}% positive (labelling index, e.g. Ki-67; 95% CI '
            f"{low:.1f}&ndash;{high:.1f}%, n = {ihc['n_nuclei']}) &middot; H-score {ihc['h_score']:.0f} "
            f"&middot; Allred {ihc['allred_total_score']} ({ihc['allred_proportion_score']} + "
            f"{ihc['allred_intensity_score']})</p>"
            + _table(
                ["DAB bin", "nuclei", "% of nuclei"],
                [
                    [_swatch(colors[name]) + escape(name), n, 100 * n / max(1, ihc["n_nuclei"])]
                    for name, n in ihc["counts"].items()
                ],
            )
            + _hotspot_line(ihc.get("hotspot"))
            + f"<p>Bins by nucleus DAB OD mean, thresholds {escape(str(ihc['dab_thresholds']))}. "
            f"{ihc.get('borderline_nuclei', 0)} nuclei are borderline (DAB OD within 0.05 of the positivity "
            f"threshold) and {ihc.get('unsure_detections', 0)} detections unsure; counting them both ways the index "
            f"lies in {_percent_range(ihc.get('positive_percent_uncertain_range'))}. The squares to review below rank "
            f"the borderline nuclei first.</p>" + "<h3>Model classes</h3>" + html
        )
    removed = summary.get("filtered_out", {})
    if removed:
        html += (
            "<p>Removed by plausibility filters: "
            + ", ".join(f"{escape(k.replace('_', ' '))} {v}" for k, v in removed.items())
            + ".</p>"
        )
    return html


def _regions_section(summary: dict) -> str:
    regions = summary.get("tissue_regions", [])
    if not regions:
        return "<p>No tissue regions.</p>"
    classes = list(summary["counts"]["classes"])
    header = ["region", "bbox (level-0 x, y, w, h)", "mm²", "nuclei", "per mm²", *[f"% {c}" for c in classes]]
    rows = []
    for region in regions:
        row = [
            str(region["id"]),
            escape(", ".join(map(str, region["bbox_level0"]))),
            region["area_mm2"],
            region["n_nuclei"],
            region["density_per_mm2"],
            *[100 * region["classes"][c]["fraction"] for c in classes],
        ]
        if "ihc" in region:
            row += [region["ihc"]["positive_percent"], region["ihc"]["h_score"]]
        rows.append(row)
    if "ihc" in regions[0]:
        header += ["% positive", "H-score"]
    return _table(header, rows)


def _hotspot_line(hotspot: dict | None) -> str:
    if hotspot is None:
        return "<p>Hotspot: no field holds enough nuclei (see <code>stain.hotspot_min_nuclei</code>).</p>"
    low, high = hotspot["positive_percent_ci95"]
    x, y, side, _ = hotspot["bbox_level0"]
    return (
        f'<p class="key">Hotspot: {hotspot["positive_percent"]:.1f}% positive (95% CI {low:.1f}&ndash;'
        f"{high:.1f}%, {hotspot['positive']}/{hotspot['n_nuclei']}) in the {hotspot['field_um']:.0f} µm field "
        f"at level-0 ({x}, {y}), side {side} px; in <code>review.geojson</code> for QuPath.</p>"
    )


def _roi_section(summary: dict) -> str:
    roi = summary.get("roi")
    if not roi:
        return ""
    annotations = roi["annotations"]
    if not annotations:
        return (
            f"<h2>Regions of interest</h2><p>The slide less the excluded annotations of "
            f"<code>{escape(Path(roi['file']).name)}</code>.</p>"
        )
    classes = list(summary["counts"]["classes"])
    header = ["annotation", "mm²", "tissue mm²", "nuclei", "per mm² of tissue", *[f"% {c}" for c in classes]]
    ihc = "ihc" in annotations[0]
    if ihc:
        header += ["% positive (95% CI)", "H-score"]
    rows = []
    for annotation in annotations:
        row = [
            escape(annotation["name"]),
            annotation["area_mm2"],
            annotation["tissue_area_mm2"],
            annotation["n_nuclei"],
            annotation["density_per_mm2"],
            *[100 * annotation["classes"][c]["fraction"] for c in classes],
        ]
        if ihc:
            low, high = annotation["ihc"]["positive_percent_ci95"]
            row += [f"{annotation['ihc']['positive_percent']:.1f} ({low:.1f}-{high:.1f})", annotation["ihc"]["h_score"]]
        rows.append(row)
    return (
        f"<h2>Regions of interest</h2><p>Nuclei counted inside the annotations of "
        f"<code>{escape(Path(roi['file']).name)}</code> only.</p>" + _table(header, rows)
    )


def _review_section(review: dict) -> str:
    squares = review.get("squares", [])
    if not squares:
        return "<p>No square holds enough nuclei to rank.</p>"
    rows = [
        [
            str(i),
            escape(", ".join(map(str, s["bbox_level0"]))),
            s["nuclei"],
            s["mean_confidence"],
            s["low_confidence_percent"],
        ]
        for i, s in enumerate(squares, start=1)
    ]
    return (
        f"<p>{review['square_um']:.0f} µm squares with the lowest mean nucleus confidence (detection probability "
        f"&times; class probability); a nucleus counts as low-confidence below "
        f"{review['low_confidence_threshold']}. Also in <code>review.geojson</code> for QuPath.</p>"
        + _table(["#", "bbox (level-0 x, y, w, h)", "nuclei", "mean confidence", "% low-confidence"], rows)
    )


QC_CHECKS = {
    "blur": ("out of focus", "its finest detail lost"),
    "ink": ("pen ink", "green to cyan marker colours"),
    "dark": ("dark or fold", "near-black pixels or a fold's density"),
    "not_tissue": ("not tissue", "neighbouring pixels unrelated, as in noise"),
}


def _quality_section(quality: dict, quality_map: Image.Image | None, colors: dict[str, list[int]]) -> str:
    tiles = quality.get("tiles")
    if not tiles:
        return ""
    rows = [
        [
            _swatch(colors.get(f"qc:{check}", [128, 128, 128])) + QC_CHECKS[check][0],
            QC_CHECKS[check][1],
            figures["tiles"],
            figures["area_mm2"],
            100 * figures["fraction"],
        ]
        for check, figures in tiles["flagged"].items()
    ]
    figure = "<p>No tile flagged.</p>"
    if quality_map is not None and any(figures["tiles"] for figures in tiles["flagged"].values()):
        figure = (
            f'<figure><img src="{image_data_uri(quality_map)}" width="{min(800, quality_map.width)}" '
            'alt="input quality map"><figcaption>Tiles flagged by input QC, tinted by check '
            "(<code>quality.png</code>).</figcaption></figure>"
        )
    return (
        f"<h2>Input quality</h2><p>{tiles['tiles_judged']} tissue tiles of {tiles['tile_um']:.0f} µm checked; "
        "flagged areas are also in <code>review.geojson</code>.</p>"
        + _table(["check", "flags a tile with", "tiles", "mm²", "% of tissue tiles"], rows)
        + figure
    )


ROI_NOTE = " inside the regions of interest"
DARKFIELD_NOTE = (
    "; <strong>dark background, as in fluorescence</strong>: the model was trained on brightfield "
    "H&amp;E and IHC, so these nuclei are unvalidated and the classes and stain measurements do not "
    "apply"
)


def _mpp_estimate(summary: dict) -> str:
    """The pixel size the nuclei suggest (``measure.magnification``), beside the declared one."""
    check = summary.get("quality", {}).get("mpp_check") or {}
    if check.get("estimated_mpp") is None:
        return ""
    return f"; the nuclei suggest {check['estimated_mpp']:.3f} µm/px ({check['nuclei']:,} nuclei)"


def write_report(
    path: Path,
    summary: dict,
    columns: dict[str, np.ndarray],
    overlay: Image.Image,
    crop: Image.Image | None,
    colors: dict[str, list[int]],
    quality_map: Image.Image | None = None,
) -> None:
    """Write report.html (atomic).

    Parameters
    ----------
    summary : the slide's summary (summary.json's content).
    columns : per-nucleus (N,) arrays: ``area_um2``, ``dab_od_mean``, ``hematoxylin_od_mean``.
    overlay : the QC overlay picture; crop : a full-resolution crop with outlines, or None.
    quality_map : the input QC map (``outputs.write_quality_map``), or None.
    colors : classification name (and ``qc:<check>``) -> RGB, for the tables' swatches.
    """
    slide, model, tissue = summary["slide"], summary["model"], summary["tissue"]
    ihc = "ihc" in summary
    histograms = [svg_histogram(columns["area_um2"], "Nucleus area", "area µm²", value_range=(0, 150))]
    if ihc:
        histograms.append(
            svg_histogram(
                columns["dab_od_mean"],
                "Nucleus DAB OD mean",
                "DAB OD",
                value_range=(0, 1.0),
                thresholds=tuple(summary["ihc"]["dab_thresholds"]),
                color="#8b5a2b",
            )
        )
    else:
        histograms.append(
            svg_histogram(
                columns["hematoxylin_od_mean"], "Nucleus hematoxylin OD mean", "hematoxylin OD", value_range=(0, 1.0)
            )
        )
    crop_html = ""
    if crop is not None:
        crop_html = (
            f'<figure><img src="{image_data_uri(crop, 800)}" width="{min(800, crop.width)}" '
            'alt="zoomed crop with nucleus outlines"><figcaption>Zoom on the densest '
            f"{summary['review']['square_um']:.0f} µm square and its surroundings, at full resolution."
            "</figcaption></figure>"
        )
    run = summary.get("run", {})
    facts = [
        ["slide", escape(Path(slide["path"]).name)],
        ["vendor", escape(str(slide["vendor"]))],
        ["pixel size", f"{slide['mpp']:.4f} µm/px ({escape(str(slide['mpp_source']))})" + _mpp_estimate(summary)],
        ["stain mode", escape(summary["stain_mode"].upper())],
        [
            "tissue",
            f"{tissue['area_mm2']:.3f} mm² ({100 * tissue['fraction']:.1f}% of the slide)"
            + (ROI_NOTE if "roi" in summary else "")
            + (DARKFIELD_NOTE if tissue.get("darkfield") else ""),
        ],
        [
            "model",
            f"{escape(model['name'])} ({escape(model['encoder'])}, {model['mpp']} µm/px), sha256 "
            f"{escape(model['sha256'][:12])}…",
        ],
        [
            "run",
            f"{run.get('seconds', 0):.1f} s, {run.get('tissue_mm2_per_second') or 0:.4f} mm²/s of tissue "
            f"({run.get('mpx_per_second_at_40x') or 0:.3f} Mpx/s at 0.25 µm/px) on "
            f"{escape(str(run.get('device', '?')))} ({escape(str(run.get('runtime', '?')))}, "
            f"{escape(str(run.get('precision', '?')))}, {run.get('workers', '?')} worker(s))",
        ],
    ]
    warnings = summary.get("quality", {}).get("warnings", [])
    if warnings:
        facts.append(["input check", "<strong>" + escape("; ".join(warnings)) + "</strong>"])
    page = f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>pathoseg report: {escape(Path(slide["path"]).name)}</title>
<style>{STYLE}</style></head>
<body>
<h1>{escape(Path(slide["path"]).name)}: {summary["nuclei"]:,} nuclei</h1>
{_table(["", ""], facts)}
<h2>Counts</h2>
{_counts_section(summary, colors)}
<h2>Overview</h2>
<div class="figures">
<figure><img src="{image_data_uri(overlay)}" width="{min(1000, overlay.width)}" alt="overlay of nucleus outlines">
<figcaption>Nucleus outlines coloured by {"DAB bin" if ihc else "class"}.</figcaption></figure>
{crop_html}
</div>
<h2>Distributions</h2>
<div class="figures">{"".join(f"<figure>{h}</figure>" for h in histograms)}</div>
{_roi_section(summary)}
{_quality_section(summary.get("quality", {}), quality_map, colors)}
<h2>Tissue regions</h2>
{_regions_section(summary)}
<h2>For review</h2>
{_review_section(summary.get("review", {}))}
<p><small>pathoseg {escape(str(run.get("pathoseg_version", "")))}. Counts come from an automated model
(see its model card); they support, not replace, a pathologist's reading.</small></p>
</body>
</html>
"""
    with atomic_path(path) as temporary:
        temporary.write_text(page, encoding="utf-8")

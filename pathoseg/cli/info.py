"""``pathoseg info SLIDE``: what the slide is and how much tissue it holds."""

from __future__ import annotations

import json

import click

from pathoseg.cli.common import friendly_errors
from pathoseg.config import load_config
from pathoseg.io.slide import open_slide
from pathoseg.pipeline import find_tissue


@click.command()
@click.argument("slide_path", type=click.Path(path_type=str))
@click.option("--mpp", type=float, help="Microns per level-0 pixel (for images without a pixel size).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@friendly_errors
def info(slide_path: str, mpp: float | None, as_json: bool) -> None:
    """Vendor, levels, dimensions, mpp, objective power, bounds and tissue fraction of SLIDE_PATH."""
    slide = open_slide(slide_path, mpp)
    bounds = slide.bounds
    facts = {
        "path": str(slide.path), "vendor": slide.vendor, "dimensions": list(slide.dimensions),
        "levels": [{"dimensions": list(d), "downsample": round(f, 4)}
                   for d, f in zip(slide.level_dimensions, slide.level_downsamples)],
        "mpp": slide.mpp, "mpp_source": slide.mpp_source, "objective_power": slide.objective_power,
        "bounds": {"x": bounds.x, "y": bounds.y, "width": bounds.width, "height": bounds.height},
    }
    if slide.mpp is not None:
        tissue, _ = find_tissue(slide, load_config())
        facts["tissue"] = {"fraction": round(tissue.fraction, 4), "area_mm2": round(tissue.area_mm2, 4)}
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    click.echo(f"{facts['path']}\n  vendor: {facts['vendor']}\n  dimensions: {bounds.width}x{bounds.height} "
               f"(level 0 {slide.dimensions[0]}x{slide.dimensions[1]})")
    for i, level in enumerate(facts["levels"]):
        click.echo(f"  level {i}: {level['dimensions'][0]}x{level['dimensions'][1]} "
                   f"(downsample {level['downsample']})")
    mpp_text = f"{slide.mpp:.4f} µm/px ({slide.mpp_source})" if slide.mpp else "unknown (give --mpp)"
    click.echo(f"  mpp: {mpp_text}\n  objective power: {slide.objective_power or 'unknown'}")
    click.echo(f"  bounds: x={bounds.x} y={bounds.y} w={bounds.width} h={bounds.height}")
    if "tissue" in facts:
        click.echo(f"  tissue: {100 * facts['tissue']['fraction']:.1f}% of the slide, "
                   f"{facts['tissue']['area_mm2']:.3f} mm²")

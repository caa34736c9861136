"""``pathoseg segment SLIDE -o OUT`` and ``pathoseg demo -o OUT``."""

from __future__ import annotations

from pathlib import Path

import click

from pathoseg.cli.common import StageProgress, friendly_errors
from pathoseg.config import is_worker_count, load_config
from pathoseg.io.files import atomic_path, prepare_output
from pathoseg.pipeline import segment_slide
from pathoseg.synthetic import write_synthetic_slide


class WorkerCount(click.ParamType):
    """A positive whole number or ``auto``."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        """A worker count (a positive whole number) or ``auto``."""
        workers = int(value) if str(value).isdigit() else value
        if is_worker_count(workers):
            return workers
        self.fail(f"{value!r} is not a positive whole number or auto", param, ctx)


WORKERS = WorkerCount()


def run_options(command):
    """Options shared by segment, demo and batch."""
    options = [
        click.option(
            "-c",
            "--config",
            "config_path",
            type=click.Path(exists=True, dir_okay=False),
            help="YAML file overriding configs/default.yaml.",
        ),
        click.option("--model", help="Shipped model name or checkpoint path."),
        click.option("--device", help="auto | cpu | cuda | cuda:N."),
        click.option("--scheduler", help="local (embedded cluster, default) | inprocess | tcp://host:port."),
        click.option(
            "--workers",
            type=WORKERS,
            help="Worker processes of the embedded cluster: a number, or auto "
            "(one per usable core, capped by memory and by the slide's regions; the default).",
        ),
        click.option("--stain", type=click.Choice(["auto", "he", "ihc"]), help="Stain mode (default auto)."),
        click.option("--no-gzip", is_flag=True, help="Write nuclei.geojson instead of nuclei.geojson.gz."),
        click.option("--table", is_flag=True, help="Also write nuclei.csv: one row of measurements per nucleus."),
        click.option("--tta", is_flag=True, help="Flip test-time augmentation (4x the inference time)."),
        click.option(
            "--drop-store-pixels",
            is_flag=True,
            help="Once a slide is finished, delete the pixels of its "
            "store.zarr (its nuclei stay, so a rerun is still instant): for archives short of disk.",
        ),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def config_from_options(
    config_path=None,
    model=None,
    device=None,
    scheduler=None,
    workers=None,
    stain=None,
    no_gzip=False,
    table=False,
    tta=False,
    drop_store_pixels=False,
):
    """Configuration: default.yaml, then ``--config``, then the options actually given."""
    given = {
        ("model", "name"): model,
        ("model", "device"): device,
        ("cluster", "scheduler"): scheduler,
        ("cluster", "workers"): workers,
        ("stain", "mode"): stain,
        ("output", "gzip"): False if no_gzip else None,
        ("output", "table"): True if table else None,
        ("model", "tta"): True if tta else None,
        ("output", "keep_store_pixels"): False if drop_store_pixels else None,
    }
    overrides: dict = {}
    for (section, key), value in given.items():
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    return load_config(config_path, overrides)


def report(summary: dict, out_dir: Path) -> None:
    """Print a run's figures: nuclei, tissue, time and speed, IHC positivity, input warnings."""
    counts, run = summary["counts"], summary["run"]
    click.echo(
        f"{summary['nuclei']} nuclei in {summary['tissue']['area_mm2']:.3f} mm² of tissue "
        f"({counts['density_per_mm2']:.0f}/mm²), {run['seconds']:.1f} s, {run['tissue_mm2_per_second']:.4f} mm²/s "
        f"({run['mpx_per_second_at_40x']:.3f} Mpx/s at 0.25 µm/px) "
        f"({run.get('device')}, {run.get('runtime')}, {run.get('precision')}) -> {out_dir}"
    )
    if "ihc" in summary:
        click.echo(f"IHC: {positivity_line(summary['ihc'])}")
        hotspot = summary["ihc"]["hotspot"]
        if hotspot:
            low, high = hotspot["positive_percent_ci95"]
            click.echo(
                f"  hotspot ({hotspot['field_um']:.0f} µm field at level-0 {hotspot['bbox_level0'][0]}, "
                f"{hotspot['bbox_level0'][1]}): {hotspot['positive_percent']:.1f}% positive "
                f"(95% CI {low:.1f}-{high:.1f}%, {hotspot['positive']}/{hotspot['n_nuclei']})"
            )
    for annotation in summary.get("roi", {}).get("annotations", []):
        line = f"  {annotation['name']}: {annotation['n_nuclei']} nuclei in {annotation['tissue_area_mm2']:.3f} mm²"
        click.echo(line + (f"; {positivity_line(annotation['ihc'])}" if "ihc" in annotation else ""))
    warnings = summary["quality"]["warnings"]
    if warnings:  # last, so that a doubtful input is what the run ends on
        click.echo(
            f"warning: input QC: {'; '.join(warnings)}; these figures are not to be trusted as they stand "
            f"(report.html, quality.png)",
            err=True,
        )


def positivity_line(ihc: dict) -> str:
    """The positivity index with its sampling interval, its range over the uncertain nuclei and the H-score."""
    low, high = ihc["positive_percent_ci95"]
    line = f"{ihc['positive_percent']:.1f}% positive (95% CI {low:.1f}-{high:.1f}%"
    if "positive_percent_uncertain_range" in ihc:
        least, most = ihc["positive_percent_uncertain_range"]
        line += f"; {least:.1f}-{most:.1f}% counting the uncertain nuclei both ways"
    return line + f"), H-score {ihc['h_score']:.0f}"


@click.command()
@click.argument("slide_path", type=click.Path(path_type=str))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--mpp", type=float, help="Microns per level-0 pixel (overrides the file's).")
@click.option(
    "--roi",
    "roi_path",
    type=click.Path(path_type=Path),
    help="GeoJSON of polygon annotations (e.g. exported from QuPath): only nuclei inside them count.",
)
@run_options
@friendly_errors
def segment(slide_path, out_dir, mpp, roi_path, quiet, **options):
    """Segment the nuclei of SLIDE_PATH into OUT: nuclei.geojson.gz, summary.json/.csv, overlay.png, store.zarr."""
    config = config_from_options(**options)
    progress = StageProgress(enabled=not quiet)
    try:
        summary = segment_slide(slide_path, out_dir, config, mpp=mpp, progress=progress, roi_path=roi_path)
    finally:
        progress.close()
    report(summary, out_dir)


@click.command()
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--size", default="6000x4000", show_default=True, help="Synthetic slide size WIDTHxHEIGHT (px).")
@run_options
@friendly_errors
def demo(out_dir, size, quiet, **options):
    """Write a synthetic pyramidal H&E slide (OUT/demo.svs) and segment it into OUT."""
    width, height = (int(v) for v in size.lower().split("x"))
    out_dir = prepare_output(out_dir)
    slide_path = out_dir / "demo.svs"
    if not slide_path.is_file():
        with atomic_path(slide_path) as partial:
            write_synthetic_slide(partial, width, height, kind="svs")
    config = config_from_options(**options)
    progress = StageProgress(enabled=not quiet)
    try:
        summary = segment_slide(slide_path, out_dir, config, progress=progress)
    finally:
        progress.close()
    report(summary, out_dir)

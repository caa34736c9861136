"""``pathoseg batch ARCHIVE -o RESULTS``: every slide of a folder, resumable, on one cluster."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from tqdm import tqdm

from pathoseg.batch import find_slides, run_batch
from pathoseg.cli.common import StageProgress, friendly_errors
from pathoseg.cli.segment import config_from_options, run_options
from pathoseg.distributed import open_runner


@click.command()
@click.argument("archive", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_root", required=True, type=click.Path(path_type=Path), help="Results folder.")
@click.option("--pattern", help="Glob on slide file names, e.g. '*.svs' (default: every known slide type).")
@click.option(
    "--roi-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of annotations: a slide with <slide name>.geojson here (or <name without suffix>.geojson, "
    "or .geojson.gz) is limited to them.",
)
@run_options
@friendly_errors
def batch(archive, out_root, pattern, roi_dir, quiet, **options):
    """Segment every slide under ARCHIVE into OUT/<slide>/, with OUT/manifest.csv and OUT/archive_summary.csv.

    Rerunning skips finished slides and resumes unfinished ones; a failing slide is recorded and the batch goes on.
    """
    config = config_from_options(**options)
    slides = find_slides(archive, pattern, exclude=out_root)
    bar = tqdm(total=len(slides), desc="slides", unit="slide", file=sys.stderr, disable=quiet)
    progress = StageProgress(enabled=not quiet, prefix="  ")

    def on_slide(slide, status):
        """Print one line per slide as the batch goes."""
        progress.close()
        bar.set_postfix_str(f"{slide.name}: {status}")
        bar.update(1)

    with open_runner(config.cluster, config.model) as runner:
        rows = run_batch(archive, out_root, config, runner, pattern, on_slide, progress, roi_dir)
    bar.close()
    statuses = [row["status"] for row in rows]
    click.echo(
        f"{len(rows)} slides: {statuses.count('ok')} done, {statuses.count('skipped')} already done, "
        f"{statuses.count('failed')} failed -> {out_root / 'manifest.csv'}"
    )

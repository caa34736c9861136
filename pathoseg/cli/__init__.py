"""The ``pathoseg`` command line: one thin module per command."""

from __future__ import annotations

import logging

import click

from pathoseg import __version__
from pathoseg.cli.batch import batch
from pathoseg.cli.evaluate import evaluate
from pathoseg.cli.info import info
from pathoseg.cli.segment import demo, segment
from pathoseg.cli.train import train


@click.group()
@click.version_option(__version__, prog_name="pathoseg")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug, with tracebacks).")
def main(verbose: int) -> None:
    """Whole-slide nuclei segmentation: slide -> zarr tiles -> HoVer-Net-style model -> QuPath GeoJSON."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


for command in (info, segment, demo, batch, train, evaluate):
    main.add_command(command)

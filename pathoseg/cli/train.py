"""``pathoseg train -c configs/train-*.yaml``: train (or resume) a model, optionally publish it into the package."""

from __future__ import annotations

import logging

import click

from pathoseg.cli.common import friendly_errors
from pathoseg.models.weights import publish_checkpoint
from pathoseg.train.loop import TrainConfig, train as train_model


@click.command()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Training configuration (configs/train-light.yaml).")
@click.option("--steps", type=int, help="Override the number of optimiser steps.")
@click.option("--device", help="auto | cpu | cuda | cuda:N.")
@click.option("--fresh", is_flag=True, help="Start over instead of resuming from OUTPUT/last.pt.")
@click.option("--publish", is_flag=True, help="Copy the best checkpoint into the package as the config's name.")
@friendly_errors
def train(config_path: str, steps: int | None, device: str | None, fresh: bool, publish: bool) -> None:
    """Train the HoVer-Net-style model on dataset folders in the layout of shared/data (resumable)."""
    logging.getLogger("pathoseg").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(message)s")
    config = TrainConfig.from_yaml(config_path)
    if steps:
        config.steps = steps
    if device:
        config.device = device
    best = train_model(config, resume=not fresh)
    click.echo(f"best checkpoint: {best}")
    if publish:
        click.echo(f"published: {publish_checkpoint(best, config.name)}")

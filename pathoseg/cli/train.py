"""``pathoseg train -c configs/train-*.yaml``: train (or resume) a model, optionally publish it into the package."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import click

from pathoseg.cli.common import friendly_errors
from pathoseg.config import load_config
from pathoseg.io.datasets import load_dataset
from pathoseg.models.infer import Predictor, resolve_device
from pathoseg.models.quantize import calibration_patches, publish_int8
from pathoseg.models.weights import load_model, publish_checkpoint
from pathoseg.region import RegionSettings
from pathoseg.train.loop import TrainConfig, split_dataset
from pathoseg.train.loop import train as train_model
from pathoseg.train.tune import postproc_grid, tune_postproc

CALIBRATION_PATCHES = 64  # crops of 256 px, drawn over the training images by area


@click.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Training configuration (configs/train-light.yaml).",
)
@click.option("--steps", type=int, help="Override the number of optimiser steps.")
@click.option("--device", help="auto | cpu | cuda | cuda:N.")
@click.option(
    "--minutes",
    type=float,
    help="Stop after this many minutes (the config's time_limit_minutes); the learning rate's cosine follows the "
    "clock where it runs out before the steps.",
)
@click.option("--fresh", is_flag=True, help="Start over instead of resuming from OUTPUT/last.pt.")
@click.option(
    "--resume-from",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Checkpoint to continue from when OUTPUT has no last.pt yet (e.g. training/light-v2/last.pt).",
)
@click.option("--publish", is_flag=True, help="Copy the best checkpoint into the package as the config's name.")
@click.option(
    "--tune-postproc",
    is_flag=True,
    help="Skip training: sweep post-processing thresholds of the best checkpoint on the validation images "
    "and print the best.",
)
@click.option(
    "--quantize",
    is_flag=True,
    help="Skip training: make the shipped model of the config's name an int8 version (OpenVINO NNCF, "
    "calibrated on crops of the training images; needs pip install nncf) and register it.",
)
@friendly_errors
def train(
    config_path: str,
    steps: int | None,
    device: str | None,
    minutes: float | None,
    fresh: bool,
    resume_from: Path | None,
    publish: bool,
    tune_postproc: bool,
    quantize: bool,
) -> None:
    """Train the HoVer-Net-style model on dataset folders in the layout of shared/data (resumable)."""
    logging.getLogger("pathoseg").setLevel(logging.INFO)
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(message)s")
    config = TrainConfig.from_yaml(config_path)
    if steps:
        config.steps = steps
    if device:
        config.device = device
    if minutes:
        config.time_limit_minutes = minutes
    if tune_postproc:
        tune(config)
        return
    if quantize:
        samples = [
            sample for spec in config.datasets if spec.weight > 0 for sample in split_dataset(spec, config.mpp)[0]
        ]
        click.echo(f"int8 version: {publish_int8(config.name, calibration_patches(samples, CALIBRATION_PATCHES))}")
        return
    last = Path(config.output) / "last.pt"
    if resume_from and not fresh and not last.exists():
        last.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(resume_from, last)
    best = train_model(config, resume=not fresh)
    click.echo(f"best checkpoint: {best}")
    if publish:
        click.echo(f"published: {publish_checkpoint(best, config.name, config.version)}")


def tune(config: TrainConfig) -> None:
    """Sweep the best checkpoint's post-processing over the validation sets with outlines (IHC sets' outlines are
    registered from another image, so they are left out)."""
    loaded = load_model(str(Path(config.output) / "best.pt"))
    validation = {
        spec.name: load_dataset(spec.path, loaded.metadata.mpp, spec.validation_ids)
        for spec in config.datasets
        if spec.validation_ids and not spec.positivity_truth
    }
    predictor = Predictor(loaded.network, resolve_device(config.device))
    settings = RegionSettings.from_config(load_config(), loaded.metadata.mpp)
    best, tried = tune_postproc(predictor, validation, settings, postproc_grid(loaded.metadata.np_classes))
    for row in sorted(tried, key=lambda r: -r["pq"])[:5]:
        click.echo("  ".join(f"{k}={v:.3f}" for k, v in row.items()))
    click.echo(f"best: {best}")

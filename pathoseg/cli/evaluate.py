"""``pathoseg evaluate PRED GT`` and ``pathoseg evaluate --model NAME DATASET``."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from pathoseg.cli.common import fail, friendly_errors
from pathoseg.config import load_config
from pathoseg.evaluation import evaluate_folder, evaluate_samples, is_positivity_dataset
from pathoseg.io.datasets import load_dataset, read_class_names, read_manifest
from pathoseg.models.infer import predictor_for
from pathoseg.models.weights import load_model
from pathoseg.outputs import json_safe, write_json
from pathoseg.region import RegionSettings


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--model", help="Run this model (name or checkpoint) over DATASET, then evaluate.")
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Run configuration whose post-processing and filters apply (default: the packaged one).",
)
@click.option("--ids", help="Comma-separated image ids to evaluate (default: all in MANIFEST.csv).")
@click.option("--device", help="auto | cpu | cuda | cuda:N (default: the configuration's).")
@click.option("-o", "--out", "out_path", type=click.Path(path_type=Path), help="Write the metrics JSON here.")
@friendly_errors
def evaluate(paths, model, config_path, ids, device, out_path) -> None:
    """Dice, AJI, AJI+, DQ, SQ, PQ per image and overall; detection and type F1 where classes exist.

    PATHS is PRED GT (a folder of <id>.png instance maps or <id>.geojson files, and a dataset folder), or, with
    --model, a single DATASET folder.
    """
    if model:
        if len(paths) != 1:
            fail("with --model give one DATASET folder")
        loaded = load_model(model)
        dataset = paths[0]
        selected = ids.split(",") if ids else list(read_manifest(dataset))
        samples = load_dataset(dataset, None, selected)  # scored at their own resolution
        # Type metrics only where the dataset's classes are the model's (NuCLS's tumour/non-tumour are not).
        dataset_classes = read_class_names(dataset) or {}
        has_types = (
            any(s.types is not None for s in samples)
            and [dataset_classes[i] for i in sorted(dataset_classes)] == loaded.metadata.class_names[1:]
        )
        config = load_config(config_path)
        positive_dab_od = config.stain.positive_dab_od if is_positivity_dataset(dataset_classes) else None
        predictor = predictor_for(loaded.network, config.model, device, loaded.int8_ir)
        settings = RegionSettings.from_config(config, loaded.metadata.mpp)
        n_classes = len(loaded.metadata.class_names) if has_types else None
        estimate_stains = (
            positive_dab_od is not None and config.stain.estimate_vectors and config.stain.stain_matrix is None
        )
        result = evaluate_samples(
            predictor,
            samples,
            settings,
            n_classes=n_classes,
            positive_dab_od=positive_dab_od,
            estimate_stains=estimate_stains,
        )
        result["model"] = {"name": loaded.metadata.name, "sha256": loaded.sha256}
    else:
        if len(paths) != 2:
            fail("give PRED and GT folders (or --model NAME DATASET)")
        result = evaluate_folder(paths[0], paths[1])
    for key, value in result["overall"].items():
        click.echo(f"{key:>16}: {value}" if isinstance(value, int) else f"{key:>16}: {value:.4f}")
    for sample_id, metrics in result["per_image"].items():
        if "ihc" in metrics:
            click.echo(ihc_line(sample_id, metrics["ihc"]))
    if out_path:
        write_json(out_path, json_safe(result))


def ihc_line(sample_id: str, scores: dict) -> str:
    """One image's positivity index against the truth, with the counts behind both, and its detection F1 (also
    without the truth's overall offset, and then over the true nuclei visible in the image, where enough nuclei pair
    up to measure the offset)."""
    shift_x, shift_y = scores["truth_shift_px"]
    unshifted = (
        f" ({scores['f1_detection_shift_removed']:.3f} without the truth's offset of ({shift_x:+.1f}, "
        f"{shift_y:+.1f}) px; {scores['f1_detection_visible']:.3f} on the {scores['visible_nuclei']} of "
        f"{scores['true_nuclei']} true nuclei visible in brightfield)"
        if np.isfinite(shift_x)
        else ""
    )
    return (
        f"{sample_id}: index {scores['pred_index_percent']:.1f}% ({scores['pred_positive_nuclei']}/"
        f"{scores['pred_nuclei']}) vs true {scores['true_index_percent']:.1f}% ({scores['true_positive_nuclei']}/"
        f"{scores['true_nuclei']}), error {scores['index_error_points']:+.1f} points, "
        f"detection F1 {scores['f1_detection']:.3f}{unshifted}, agreement {scores['positivity_agreement']:.3f}"
    )

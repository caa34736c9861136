"""Tune post-processing thresholds on the validation split (predictions computed once, post-processing swept)."""

from __future__ import annotations

import dataclasses
import itertools
import logging

import numpy as np

from pathoseg.config import PostprocConfig
from pathoseg.evaluation import nuclei_of_maps
from pathoseg.io.datasets import Sample
from pathoseg.metrics import instance_metrics
from pathoseg.models.infer import Predictor
from pathoseg.region import RegionSettings

log = logging.getLogger(__name__)

# The model's HV maps are smoother than ground truth, so its boundaries need a more sensitive gradient scale.
GRID = {
    "np_threshold": [0.4, 0.5, 0.6],
    "marker_threshold": [0.15, 0.25, 0.35],
    "gradient_scale": [0.1, 0.14, 0.2, 0.28],
}


def postproc_grid(np_classes: int) -> dict[str, list]:
    """The thresholds swept for a model: three-class heads also gate markers on the interior probability."""
    return {**GRID, "interior_threshold": [0.0, 0.15, 0.3, 0.5]} if np_classes == 3 else dict(GRID)


def tune_postproc(
    predictor: Predictor, validation: dict[str, list[Sample]], settings: RegionSettings, grid: dict[str, list] = GRID
) -> tuple[PostprocConfig, list[dict]]:
    """The post-processing parameters of best PQ over the validation sets (after ``settings``' plausibility
    filters, as ``pathoseg segment`` applies them), and every tried combination with each set's mean PQ and AJI.

    Each set counts equally (the mean of its images' PQ), so a set of many small patches does not outweigh one of
    a few large images.
    """
    maps = {name: [predictor.predict(sample.image) for sample in samples] for name, samples in validation.items()}
    tried = []
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values))
        tried_settings = dataclasses.replace(settings, postproc=dataclasses.replace(settings.postproc, **params))
        row = dict(params)
        for name, samples in validation.items():
            scores = [
                instance_metrics(sample.instances, nuclei_of_maps(sample.image, sample_maps, tried_settings)[0])
                for sample, sample_maps in zip(samples, maps[name])
            ]
            row.update(
                {
                    f"{name}_pq": float(np.mean([s["pq"] for s in scores])),
                    f"{name}_aji": float(np.mean([s["aji"] for s in scores])),
                }
            )
        row["pq"] = float(np.mean([row[f"{name}_pq"] for name in validation]))
        tried.append(row)
        log.info("%s", row)
    best = max(tried, key=lambda r: r["pq"])
    return dataclasses.replace(settings.postproc, **{k: best[k] for k in grid}), tried

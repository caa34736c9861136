"""Tune post-processing thresholds on the validation split (predictions computed once, post-processing swept)."""

from __future__ import annotations

import dataclasses
import itertools
import logging

import numpy as np

from pathoseg.metrics import instance_metrics
from pathoseg.models.infer import Predictor
from pathoseg.evaluation import nuclei_of_maps
from pathoseg.models.postproc import PostprocParams
from pathoseg.region import RegionSettings
from pathoseg.train.data import Sample

log = logging.getLogger(__name__)

# The model's HV maps are smoother than ground truth, so its boundaries need a more sensitive gradient scale.
GRID = {"np_threshold": [0.4, 0.5, 0.6], "marker_threshold": [0.15, 0.25, 0.35],
        "gradient_scale": [0.1, 0.14, 0.2, 0.28]}


def tune_postproc(predictor: Predictor, samples: list[Sample], settings: RegionSettings,
                  grid: dict[str, list] = GRID) -> tuple[PostprocParams, list[dict]]:
    """The post-processing parameters of best mean PQ over ``samples`` (after ``settings``' plausibility filters,
    as ``pathoseg segment`` applies them), and every tried combination with its PQ and AJI."""
    maps = [predictor.predict(sample.image) for sample in samples]
    tried = []
    for values in itertools.product(*grid.values()):
        tried_settings = dataclasses.replace(
            settings, postproc=dataclasses.replace(settings.postproc, **dict(zip(grid, values))))
        scores = [instance_metrics(s.instances, nuclei_of_maps(s.image, m, tried_settings)[0])
                  for s, m in zip(samples, maps)]
        tried.append({**dict(zip(grid, values)), "pq": float(np.mean([s["pq"] for s in scores])),
                      "aji": float(np.mean([s["aji"] for s in scores]))})
        log.info("%s", tried[-1])
    best = max(tried, key=lambda row: row["pq"])
    return dataclasses.replace(settings.postproc, **{k: best[k] for k in grid}), tried

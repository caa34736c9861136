"""Detections on pale IHC without truth: how many of a model's nuclei the image does not show.

Issue 23's error analysis found a quarter of pathoseg-light's detections in the IHC example lying on pale cytoplasm,
all fainter than the visibility bar (``evaluation.VISIBLE_CONTRAST_OD``, the 5th percentile of the contrast of the
nuclei pathologists outlined in MoNuSeg) and under the unsure detection probability. This prints, for each model
side by side: detections, those under the bar ("faint"), those also unsure, and the positive share, on the IHC
example and the DeepLIIF Ki-67 tiles (whose truth holds pale nuclei too: read with ``pathoseg evaluate``'s detection
F1 over visible nuclei, which this does not replace).

    python benchmarks/bench_ihc_detections.py --models pathoseg-light pathoseg-fast [--precision bf16]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pathoseg.config import Config, load_config
from pathoseg.evaluation import VISIBLE_CONTRAST_OD, nuclei_of_maps
from pathoseg.io.datasets import load_dataset
from pathoseg.measure.nuclei import contrast_od
from pathoseg.models.infer import Predictor, predictor_for
from pathoseg.models.weights import load_model
from pathoseg.region import RegionSettings
from pathoseg.system import cpu_capability

REPO = Path(__file__).resolve().parents[1]


def images(data: Path) -> dict[str, tuple[np.ndarray, float]]:
    """``{name: (rgb, mpp)}``: the IHC example and the DeepLIIF tiles."""
    found = {"ihc-dab-roi": (np.asarray(Image.open(data / "examples/ihc-dab-roi.png").convert("RGB")), 0.25)}
    for sample in load_dataset(data / "deepliif-ihc/train", None):
        found[sample.id] = (sample.image, sample.mpp)
    return found


@dataclass
class IhcRun:
    """A model set up once as ``segment --stain ihc`` runs it: its predictor, region settings and configuration."""

    name: str
    predictor: Predictor
    settings: RegionSettings
    config: Config

    @classmethod
    def of(cls, model: str, precision: str) -> IhcRun:
        """Load and compile ``model`` in ``precision``."""
        loaded = load_model(model)
        config = load_config(overrides={"model": {"name": model, "precision": precision}, "stain": {"mode": "ihc"}})
        predictor = predictor_for(loaded.network, config.model, int8_ir=loaded.int8_ir)
        return cls(model, predictor, RegionSettings.from_config(config, loaded.metadata.mpp), config)

    def detection_row(self, rgb: np.ndarray, mpp: float) -> str:
        """The model's counts on one image (which must be at the model's mpp)."""
        if abs(mpp - self.settings.mpp) > 1e-3:
            raise SystemExit(f"{self.name}: runs at {self.settings.mpp} µm/px, the images are at {mpp}")
        labels, measurements = nuclei_of_maps(rgb, self.predictor.predict(rgb), self.settings)
        faint = contrast_od(rgb, labels, mpp) < VISIBLE_CONTRAST_OD
        unsure = measurements["detection_probability"] < self.config.stain.unsure_detection_probability
        positive = measurements["dab_od_mean"] >= self.config.stain.positive_dab_od
        return (
            f"{len(faint):5d} nuclei, faint {faint.sum():4d} ({faint.mean():5.1%}), faint and unsure "
            f"{(faint & unsure).sum():4d}, positive {positive.mean():5.1%}  "
            f"({self.predictor.runtime}/{self.predictor.precision})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["pathoseg-light", "pathoseg-fast"])
    parser.add_argument("--precision", default="auto", help="auto (int8 where a model ships it) | fp32 | bf16")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"CPU: {cpu_capability()}; faint: contrast under {VISIBLE_CONTRAST_OD} OD")
    runs = [IhcRun.of(model, args.precision) for model in args.models]
    for name, (rgb, mpp) in images(args.data).items():
        print(name)
        for run in runs:
            print(f"  {run.name:28s} {run.detection_row(rgb, mpp)}")


if __name__ == "__main__":
    main()

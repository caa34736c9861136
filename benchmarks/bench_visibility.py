"""Which true nuclei can a brightfield image show? The contrast of every nucleus pathologists outlined on H&E
(MoNuSeg's training set; ``measure.nuclei.contrast_od``: its mean optical density minus its surroundings') sets the
bar (``evaluation.VISIBLE_CONTRAST_OD`` is its 5th percentile). Then, on the IHC tiles whose truth was drawn on
registered immunofluorescence, how many true nuclei clear each percentile's bar and the model's detection F1 over
those (the truth's offset removed, as ``evaluate`` prints it), so the choice of percentile can be seen.

    python benchmarks/bench_visibility.py [--model pathoseg-light] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from pathoseg.config import load_config
from pathoseg.evaluation import match_radius_px, nuclei_at_sample_resolution, registration_scores
from pathoseg.io.datasets import load_dataset
from pathoseg.measure.nuclei import contrast_od
from pathoseg.metrics import centroids
from pathoseg.models.infer import predictor_for
from pathoseg.models.weights import load_model
from pathoseg.region import RegionSettings
from pathoseg.system import cpu_capability

REPO = Path(__file__).resolve().parents[1]
PERCENTILES = (1.0, 2.5, 5.0, 10.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pathoseg-light")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"CPU: {cpu_capability()}")
    he_contrast = np.concatenate(
        [contrast_od(s.image, s.instances, s.mpp) for s in load_dataset(args.data / "monuseg/train", None)]
    )
    bars = {p: float(np.nanpercentile(he_contrast, p)) for p in PERCENTILES}
    print(f"MoNuSeg training truth, {len(he_contrast)} nuclei: contrast (OD) median {np.nanmedian(he_contrast):.3f}")
    print("  percentile bars: " + ", ".join(f"P{p:g} {bar:.3f}" for p, bar in bars.items()))
    loaded = load_model(args.model)
    config = load_config(overrides={"model": {"name": args.model}})
    predictor = predictor_for(loaded.network, config.model, int8_ir=loaded.int8_ir)
    settings = RegionSettings.from_config(config, loaded.metadata.mpp)
    for sample in load_dataset(args.data / "deepliif-ihc/train", None):
        pred, _ = nuclei_at_sample_resolution(predictor, sample, settings)
        true_xy, true_labels = centroids(sample.instances)
        pred_xy, _ = centroids(pred)
        radius_px = match_radius_px([sample])
        cells = []
        for percentile, bar in bars.items():
            scores = registration_scores(sample, true_xy, true_labels, pred_xy, radius_px, bar)
            visible, found = scores["visible_nuclei"], scores["f1_detection_visible"]
            cells.append(f"P{percentile:g}: {visible}/{len(true_xy)} visible, F1 {found:.3f}")
        print(
            f"{sample.id} ({args.model}, {predictor.runtime}/{predictor.precision}): all nuclei, offset removed: F1 "
            f"{scores['f1_detection_shift_removed']:.3f}; " + "; ".join(cells)
        )


if __name__ == "__main__":
    main()

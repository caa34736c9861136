"""Which true nuclei one model matches and another does not, and why, on the validation sets.

A true nucleus is matched when a predicted one overlaps it at IoU > 0.5 (PQ's matching). Those the reference model
matches and the other does not are sorted into: **merged** (the prediction covering most of it also covers over 30%
of another true nucleus), **missed** (predictions cover under 30% of it) and **outline** (the rest: found, but drawn
too differently). Issue 22 used it to find what pathoseg-fast loses against pathoseg-light.

    python benchmarks/bench_lost_nuclei.py --reference pathoseg-light --models pathoseg-fast [--precision fp32]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pathoseg.config import load_config
from pathoseg.evaluation import nuclei_at_sample_resolution
from pathoseg.io.datasets import Sample, load_dataset
from pathoseg.models.infer import predictor_for
from pathoseg.models.weights import load_model
from pathoseg.region import RegionSettings
from pathoseg.system import cpu_capability
from pathoseg.train.loop import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SETS = ("monuseg", "consep")
COVERED = 0.3


def validation_sets() -> dict[str, list[Sample]]:
    """The MoNuSeg and CoNSeP validation images of the training configs' split, at their own resolution."""
    specs = {spec.name: spec for spec in TrainConfig.from_yaml(REPO / "configs/train-light-v2.yaml").datasets}
    return {name: load_dataset(REPO / specs[name].path, None, specs[name].validation_ids, False) for name in SETS}


def truth_outcomes(truth: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Per true nucleus 1..N of ``truth`` (both (H, W) label maps): ``present``, ``matched`` (IoU > 0.5),
    ``merged`` and ``missed`` as in the module docstring; (N,) bool arrays."""
    n_pred = int(pred.max()) + 1
    overlap = np.bincount(truth.ravel().astype(np.int64) * n_pred + pred.ravel(), minlength=(truth.max() + 1) * n_pred)
    overlap = overlap.reshape(-1, n_pred)[1:]  # (N, M+1): pixels of true i in prediction j (j = 0: background)
    true_px, pred_px = overlap.sum(axis=1), overlap.sum(axis=0)
    iou = overlap / np.maximum(true_px[:, None] + pred_px[None] - overlap, 1)
    iou[:, 0] = 0
    covered = overlap[:, 1:].sum(axis=1) / np.maximum(true_px, 1)
    largest = overlap[:, 1:].argmax(axis=1) + 1
    truths_covered = (overlap / np.maximum(true_px[:, None], 1) > COVERED).sum(axis=0)
    return {
        "present": true_px > 0,
        "matched": iou.max(axis=1) > 0.5,
        "merged": (covered >= COVERED) & (truths_covered[largest] >= 2),
        "missed": covered < COVERED,
    }


def outcomes_of(model: str, precision: str, samples: list[Sample]) -> list[dict[str, np.ndarray]]:
    """``truth_outcomes`` of each sample for ``model`` run as ``pathoseg evaluate`` runs it."""
    loaded = load_model(model)
    config = load_config(overrides={"model": {"name": model, "precision": precision}})
    predictor = predictor_for(loaded.network, config.model, int8_ir=loaded.int8_ir)
    settings = RegionSettings.from_config(config, loaded.metadata.mpp)
    return [
        truth_outcomes(sample.instances, nuclei_at_sample_resolution(predictor, sample, settings)[0])
        for sample in samples
    ]


def comparison_row(reference: list[dict], other: list[dict]) -> str:
    """True nuclei, matched by each, and those the reference matches and the other does not, by cause."""
    counts = dict.fromkeys(("truth", "reference", "other", "lost", "merged", "missed", "outline", "gained"), 0)
    for ref, oth in zip(reference, other):
        present = ref["present"]
        lost = present & ref["matched"] & ~oth["matched"]
        counts["truth"] += int(present.sum())
        counts["reference"] += int((present & ref["matched"]).sum())
        counts["other"] += int((present & oth["matched"]).sum())
        counts["lost"] += int(lost.sum())
        counts["merged"] += int((lost & oth["merged"]).sum())
        counts["missed"] += int((lost & oth["missed"]).sum())
        counts["outline"] += int((lost & ~oth["merged"] & ~oth["missed"]).sum())
        counts["gained"] += int((present & oth["matched"] & ~ref["matched"]).sum())
    share = counts["merged"] / max(counts["lost"], 1)
    return "  ".join(f"{key} {value:5d}" for key, value in counts.items()) + f"  merged/lost {share:.0%}"


def main() -> None:
    """Print one row per validation set and compared model."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", default="pathoseg-light")
    parser.add_argument("--models", nargs="+", default=["pathoseg-fast"])
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    print(f"CPU: {cpu_capability()}; precision {args.precision}; matched: IoU > 0.5 with a true nucleus")
    sets = validation_sets()
    reference = {name: outcomes_of(args.reference, args.precision, samples) for name, samples in sets.items()}
    for model in args.models:
        for name, samples in sets.items():
            row = comparison_row(reference[name], outcomes_of(model, args.precision, samples))
            print(f"{name:8s} {args.reference} vs {model}: {row}")


if __name__ == "__main__":
    main()

"""How much a 20x scan costs: MoNuSeg validation images as a 20x scanner would see them, segmented with --mpp 0.5.

Each 40x (0.25 µm/px) validation image is downsampled 2x with anti-aliasing (what a 20x scan of the same tissue
holds), saved as PNG, and segmented by the full pipeline with ``mpp=0.5`` (the tiler upsamples it to the model's
0.25 µm/px); the original is segmented with ``mpp=0.25``. Both GeoJSONs are scored against the 40x truth. Prints PQ
and AJI per image and the mean loss (the model issue's target: <= 0.03 PQ).

    python benchmarks/bench_magnification.py [--model pathoseg-light] [--data ../shared/data/monuseg/train]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.transform import rescale

from pathoseg.config import load_config
from pathoseg.evaluation import rasterise_geojson
from pathoseg.io.datasets import load_dataset
from pathoseg.metrics import instance_metrics
from pathoseg.pipeline import segment_slide
from pathoseg.train.loop import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def scored(png: Path, mpp: float, truth: np.ndarray, out: Path, config) -> dict:
    """Segment ``png`` at ``mpp`` and score its GeoJSON (level-0 px, scaled to the truth's 0.25 µm/px)."""
    segment_slide(png, out, config, mpp=mpp)
    predicted, _ = rasterise_geojson(out / "nuclei.geojson", truth.shape, {}, scale=mpp / 0.25)
    return instance_metrics(truth, predicted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pathoseg-light")
    parser.add_argument("--data", default=str(REPO.parent / "shared/data/monuseg/train"))
    parser.add_argument("--factor", type=float, default=2.0, help="downsampling of the simulated scan")
    args = parser.parse_args()
    ids = next(
        spec.validation_ids
        for spec in TrainConfig.from_yaml(REPO / "configs/train-light-v2.yaml").datasets
        if spec.path.endswith("monuseg/train")
    )
    config = load_config(
        overrides={"model": {"name": args.model}, "cluster": {"scheduler": "inprocess"}, "output": {"gzip": False}}
    )
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        work = Path(workdir)
        for sample in load_dataset(args.data, 0.25, ids):
            original, degraded = work / f"{sample.id}.png", work / f"{sample.id}-20x.png"
            Image.fromarray(sample.image).save(original)
            small = rescale(
                sample.image, 1 / args.factor, order=1, anti_aliasing=True, channel_axis=-1, preserve_range=True
            )
            Image.fromarray(small.round().astype(np.uint8)).save(degraded)
            at_40x = scored(original, 0.25, sample.instances, work / f"{sample.id}-40x-out", config)
            at_20x = scored(degraded, 0.25 * args.factor, sample.instances, work / f"{sample.id}-20x-out", config)
            rows.append((at_40x["pq"], at_20x["pq"], at_40x["aji"], at_20x["aji"]))
            print(
                f"{sample.id}: PQ 40x {at_40x['pq']:.3f} -> 20x {at_20x['pq']:.3f}, AJI {at_40x['aji']:.3f} -> "
                f"{at_20x['aji']:.3f}",
                flush=True,
            )
    pq40, pq20, aji40, aji20 = np.mean(rows, axis=0)
    print(
        f"model {args.model}, mean of {len(rows)}: PQ 40x {pq40:.3f}, 20x {pq20:.3f} (loss {pq40 - pq20:.3f}); "
        f"AJI 40x {aji40:.3f}, 20x {aji20:.3f} (loss {aji40 - aji20:.3f})"
    )


if __name__ == "__main__":
    main()

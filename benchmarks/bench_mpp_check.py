"""Does the magnification check (``pathoseg.measure.magnification``) hold on real images? Each annotated image (a
CoNSeP source image's 16 patches together, NuCLS's 15 tiles together: too few nuclei each), the examples and CMU-1
are segmented as ``segment`` would at their true pixel size, and again resampled by 0.7x, 1.4x, 0.5x and 2x while
still declared at their true pixel size (a scanner's metadata off by those factors; 0.5x and 2x are a 20x scan
labelled 40x and the reverse). Prints per image the pixel-size ratio the check estimates (1 = the declared size is
right) and, per resampling, how often it warns at ``--factor``; then each class's median area at the true size
(what ``REFERENCE_AREA_UM2`` is set from) and how far the estimate moves per resampling (a ruler that scaled as the
image would move log-area by twice the log-factor).

    python benchmarks/bench_mpp_check.py [--model pathoseg-light] [--data ../shared/data] [--factor 1.8]
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from pathoseg.config import load_config
from pathoseg.evaluation import nuclei_of_maps
from pathoseg.io.datasets import load_dataset, resample_image
from pathoseg.io.slide import open_slide
from pathoseg.measure.magnification import MIN_CLASS_NUCLEI, area_ratio, beyond_factor, reference_areas
from pathoseg.models.infer import predictor_for
from pathoseg.models.weights import load_model
from pathoseg.region import RegionSettings
from pathoseg.system import cpu_capability

REPO = Path(__file__).resolve().parents[1]
# (dataset folder, how its images group into units of enough nuclei)
DATASETS = (
    ("monuseg/train", lambda sample_id: sample_id),
    ("consep/train", lambda sample_id: re.sub(r"_\d+$", "", sample_id)),
    ("nucls/train", lambda sample_id: "all"),
    ("nucls/test", lambda sample_id: "all"),
    ("deepliif-ihc/train", lambda sample_id: sample_id),
)
# Images outside the datasets, at the pixel size they were scanned at.
OTHERS = (
    ("examples/he-tcga-tile.png", 0.25),
    ("examples/ihc-dab-roi.png", 0.25),
    ("examples/he-small.jpg", 0.5),
    ("examples/he-0.5mpp.ome.tif", 0.5),
    ("slides/CMU-1-Small-Region.svs", 0.499),
)
FACTORS = (1.0, 0.7, 1.4, 0.5, 2.0)


def read_rgb(path: Path, mpp: float) -> np.ndarray:
    """An image's or slide's whole level 0, (H, W, 3) uint8."""
    with open_slide(path, mpp) as slide:
        width, height = slide.dimensions
        return slide.read_region(0, 0, 0, width, height)


def images(data: Path, model_mpp: float):
    """(unit name, (H, W, 3) image at ``model_mpp``) for every image of the data."""
    for relative, mpp in OTHERS:
        if (data / relative).exists():
            yield relative, resample_image(read_rgb(data / relative, mpp), mpp / model_mpp)
    for folder, unit_of in DATASETS:
        if (data / folder).is_dir():
            for sample in load_dataset(data / folder, model_mpp, use_types=False):
                yield f"{folder.split('/')[0]}:{unit_of(sample.id)}", sample.image


def nuclei_per_unit(data: Path, model: str) -> dict[str, dict[float, tuple[list, list]]]:
    """Per unit and resampling factor: the areas (µm² at the declared, true, pixel size) and class names of the
    nuclei ``segment`` would write."""
    config = load_config(overrides={"model": {"name": model}})
    loaded = load_model(model)
    predictor = predictor_for(loaded.network, config.model, None, loaded.int8_ir)
    settings = RegionSettings.from_config(config, loaded.metadata.mpp)
    names = np.asarray(loaded.metadata.class_names, dtype=object)
    found: dict[str, dict[float, tuple[list, list]]] = defaultdict(lambda: {f: ([], []) for f in FACTORS})
    for unit, image in images(data, loaded.metadata.mpp):
        for factor in FACTORS:
            resampled = image if factor == 1.0 else resample_image(image, factor)
            _, measurements = nuclei_of_maps(resampled, predictor.predict(resampled), settings)
            found[unit][factor][0].extend(measurements["area_um2"])
            found[unit][factor][1].extend(names[measurements["class_id"].astype(int)])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pathoseg-light")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--factor", type=float, default=load_config().tiling.mpp_check_factor)
    args = parser.parse_args()
    torch.set_num_threads(1)
    reference = reference_areas(args.model)
    print(f"CPU: {cpu_capability()}; model {args.model}; reference areas {reference} µm²", flush=True)
    found = nuclei_per_unit(args.data, args.model)
    ratios = {
        unit: {f: area_ratio(np.array(a, float), np.array(c), reference)[0] for f, (a, c) in per_factor.items()}
        for unit, per_factor in found.items()
    }
    print(f"{'image':40s} {'nuclei':>6s} " + " ".join(f"{f'x{f}':>7s}" for f in FACTORS))
    for unit, per_factor in sorted(ratios.items()):
        print(f"{unit:40s} {len(found[unit][1.0][0]):6d} " + " ".join(f"{per_factor[f]:7.2f}" for f in FACTORS))
    for factor in FACTORS:
        values = np.array([per_factor[factor] for per_factor in ratios.values()])
        known = values[np.isfinite(values)]
        shifts = [np.log(r[factor] / r[1.0]) for r in ratios.values() if np.isfinite(r[factor] / r[1.0])]
        warned = sum(beyond_factor(ratio, args.factor) for ratio in known)
        ruler = 2 * np.log(1 / factor)
        print(f"x{factor} (true µm/px x{1 / factor:.2f}): warned on {warned} of {len(known)}; ", end="")
        print(f"mean log-area shift {np.mean(shifts):+.3f} (a ruler: {ruler:+.3f})")
    for name in reference:
        medians = [
            np.median(np.array(a)[np.array(c) == name])
            for unit, per_factor in found.items()
            for a, c in [per_factor[1.0]]
            if ":" in unit and np.sum(np.array(c) == name) >= MIN_CLASS_NUCLEI
        ]
        print(f"{name}: median of the per-image medians at the true size {np.median(medians):.1f} µm² ", end="")
        print(f"({len(medians)} images)")


if __name__ == "__main__":
    main()

"""Where the tile QC thresholds come from: every real image of ``shared/data``, and the same images degraded.

For each data set (and the real slides), the tile checks of ``measure.quality`` on 256 px tiles of 128 µm: the
extreme of each metric on the side where it would flag, and how many tiles each check flags (the thresholds are
set so that no real tile is). Then the MoNuSeg and NuCLS images degraded the way slides go wrong: blurred (a
Gaussian of 0.5, 1 and 2 µm, JPEG re-encoded as a scanner would), a green marker stroke over half the tile, a
fold (the optical density doubled), and uniform noise; the share of their tiles each check flags.

    python benchmarks/bench_quality.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from pathoseg.config import load_config
from pathoseg.geometry import Box
from pathoseg.io.slide import open_slide
from pathoseg.measure.quality import TILE_FLAGS, TILE_METRICS, region_quality, tile_flags
from pathoseg.tiling.tissue import find_tissue

TILE_UM = 128.0
SETS = ("monuseg/train", "consep/train", "nucls/train", "nucls/test", "dsb2018-histo/train", "deepliif-ihc/train")
EXAMPLES = {
    "examples/he-tcga-tile.png": 0.25,
    "examples/ihc-dab-roi.png": 0.25,
    "examples/he-small.jpg": 0.5,
    "examples/he-0.5mpp.ome.tif": None,
    "slides/CMU-1-Small-Region.svs": None,
    "slides/TCGA-CR-7395-01A-01-TS1-lowres.svs": 1.0,
}
WORST = {"blur_ratio": min, "ink_fraction": max, "dark_fraction": max, "mean_od": max, "neighbour_correlation": min}


def image_tiles(rgb: np.ndarray, mpp: float, tissue: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``region_quality`` metrics of an image taken as one region, in tiles of ``TILE_UM`` (the whole image when
    smaller), and which tiles the (h, w) bool ``tissue`` mask (any scale; None: all tissue) touches."""
    height, width = rgb.shape[:2]
    tile_px = min(int(round(TILE_UM / mpp)), height, width)
    core = Box(0, 0, width // tile_px * tile_px, height // tile_px * tile_px)
    rows = region_quality(rgb, Box(0, 0, width, height), core, tile_px, mpp)
    if tissue is None:
        return rows[:, 2:], np.ones(len(rows), bool)
    scale = tissue.shape[0] / height
    has_tissue = [
        tissue[
            int(r * tile_px * scale) : int(np.ceil((r + 1) * tile_px * scale)),
            int(c * tile_px * scale) : int(np.ceil((c + 1) * tile_px * scale)),
        ].any()
        for r, c in rows[:, :2].astype(int)
    ]
    return rows[:, 2:], np.array(has_tissue, bool)


def real_images(data: Path):
    for name in SETS:
        folder = data / name
        if not (folder / "MANIFEST.csv").is_file():
            continue
        with open(folder / "MANIFEST.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                path = next((folder / "images").glob(f"{row['id']}.*"))
                yield name.split("/")[0], np.asarray(Image.open(path).convert("RGB")), float(row["mpp"]), None
    for relative, mpp in EXAMPLES.items():
        if (data / relative).is_file():
            slide = open_slide(data / relative, mpp)
            bounds = slide.bounds
            tissue, _ = find_tissue(slide, load_config())
            yield (
                relative.split("/")[-1],
                slide.read_region(bounds.x, bounds.y, 0, bounds.width, bounds.height),
                slide.mpp,
                tissue.mask,
            )


def blurred(rgb: np.ndarray, sigma_um: float, mpp: float) -> np.ndarray:
    smooth = np.stack([ndimage.gaussian_filter(rgb[..., c].astype(np.float32), sigma_um / mpp) for c in range(3)], 2)
    buffer = io.BytesIO()
    Image.fromarray(smooth.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=85)
    return np.asarray(Image.open(buffer))


def inked(rgb: np.ndarray) -> np.ndarray:
    marked = rgb.copy()
    marked[:, : rgb.shape[1] // 2] = (marked[:, : rgb.shape[1] // 2] * np.array([0.35, 0.75, 0.5])).astype(np.uint8)
    return marked


def folded(rgb: np.ndarray, layers: float) -> np.ndarray:
    """Optical density multiplied by ``layers``: tissue folded over itself."""
    return (255 * (np.clip(rgb, 1, 255) / 255.0) ** layers).astype(np.uint8)


def noise(rgb: np.ndarray) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, rgb.shape).astype(np.uint8)


def flag_counts(metrics: np.ndarray, judged: np.ndarray) -> dict[str, int]:
    return {name: int(mask.sum()) for name, mask in tile_flags(metrics, judged).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    by_set: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    degraded: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for name, rgb, mpp, tissue in real_images(args.data):
        by_set.setdefault(name, []).append(image_tiles(rgb, mpp, tissue))
        if name in ("monuseg", "nucls"):
            for label, image in (
                ("blur 0.5 µm", blurred(rgb, 0.5, mpp)),
                ("blur 1 µm", blurred(rgb, 1.0, mpp)),
                ("blur 2 µm", blurred(rgb, 2.0, mpp)),
                ("green ink", inked(rgb)),
                ("fold (OD x2)", folded(rgb, 2.0)),
                ("fold (OD x3)", folded(rgb, 3.0)),
                ("noise", noise(rgb)),
            ):
                degraded.setdefault(label, []).append(image_tiles(image, mpp))
    columns = list(WORST)
    print(
        f"{'real images':28s} {'tiles':>6s} "
        + " ".join(f"{c:>21s}" for c in columns)
        + "  flagged "
        + "/".join(TILE_FLAGS)
    )
    for name, parts in by_set.items():
        metrics, judged = (np.concatenate(part) for part in zip(*parts))
        worst = [
            WORST[c](
                metrics[judged, TILE_METRICS.index(c)][np.isfinite(metrics[judged, TILE_METRICS.index(c)])],
                default=np.nan,
            )
            for c in columns
        ]
        counts = flag_counts(metrics, judged)
        print(
            f"{name:28s} {int(judged.sum()):6d} "
            + " ".join(f"{w:21.4f}" for w in worst)
            + "  "
            + "/".join(str(counts[f]) for f in TILE_FLAGS)
        )
    print(f"\n{'degraded (MoNuSeg, NuCLS)':28s} {'tiles':>6s}  share flagged " + " / ".join(TILE_FLAGS))
    for label, parts in degraded.items():
        metrics, judged = (np.concatenate(part) for part in zip(*parts))
        counts = flag_counts(metrics, judged)
        print(
            f"{label:28s} {int(judged.sum()):6d}  " + " / ".join(f"{counts[f] / judged.sum():.2f}" for f in TILE_FLAGS)
        )


if __name__ == "__main__":
    main()

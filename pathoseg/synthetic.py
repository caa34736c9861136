"""Synthetic H&E whole-slide images: a tissue blob with nuclei, written tile by tile as a pyramidal TIFF or SVS.

Used by ``pathoseg demo``, the tests and the benchmarks. Rendering is deterministic (seeded) and streams tiles, so
slides of any size are written without holding them in memory. Nuclei lie on a jittered lattice in level-0
coordinates and are rendered at each level's resolution, so they cross tile borders like real ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

GLASS_RGB = np.array([244, 243, 246], np.float32)
STROMA_RGB = np.array([236, 168, 205], np.float32)
NUCLEUS_RGB = np.array([92, 58, 140], np.float32)


@dataclass
class SyntheticSlide:
    """Parameters of a synthetic slide (level-0 pixels at ``mpp``)."""

    width: int
    height: int
    mpp: float = 0.25
    seed: int = 0
    nucleus_spacing_um: float = 13.0
    # Lymphocyte-sized (the model calls them inflammatory), so that their areas fit the magnification check's
    # reference: at (2.8, 4.5) µm they measured twice a lymphocyte and the demo was taken for a 0.11 µm/px scan.
    nucleus_radius_um: tuple[float, float] = (2.0, 3.4)
    nucleus_fraction: float = 0.7

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.spacing_px = self.nucleus_spacing_um / self.mpp
        rows, cols = int(self.height / self.spacing_px) + 1, int(self.width / self.spacing_px) + 1
        grid_y, grid_x = np.mgrid[0:rows, 0:cols].astype(np.float32)
        jitter = rng.uniform(-0.3, 0.3, size=(2, rows, cols)) * self.spacing_px
        self.centre_x = (grid_x + 0.5) * self.spacing_px + jitter[0]
        self.centre_y = (grid_y + 0.5) * self.spacing_px + jitter[1]
        radius = rng.uniform(*self.nucleus_radius_um, size=(rows, cols)) / self.mpp
        self.radius_a = radius * rng.uniform(1.0, 1.4, size=(rows, cols))
        self.radius_b = radius / rng.uniform(1.0, 1.2, size=(rows, cols))
        self.angle = rng.uniform(0, np.pi, size=(rows, cols))
        self.darkness = rng.uniform(0.75, 1.15, size=(rows, cols))
        present = rng.random((rows, cols)) < self.nucleus_fraction
        self.present = present & self.in_tissue(self.centre_x, self.centre_y)

    def in_tissue(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """A wavy ellipse covering the middle of the slide, with a glass channel through it."""
        u = (x / self.width - 0.5) * 2
        v = (y / self.height - 0.5) * 2
        angle = np.arctan2(v, u)
        radius = 0.82 + 0.08 * np.sin(3 * angle) + 0.05 * np.cos(5 * angle + 1)
        channel = np.abs(v - 0.35 * np.sin(2.5 * u)) < 0.035
        return (u * u + v * v < radius * radius) & ~channel

    def render(self, x0: int, y0: int, width: int, height: int, downsample: float = 1.0) -> np.ndarray:
        """(height, width, 3) uint8 RGB of a block at a level: top-left (x0, y0) in that level's pixels."""
        ys = (y0 + np.arange(height, dtype=np.float32) + 0.5) * downsample
        xs = (x0 + np.arange(width, dtype=np.float32) + 0.5) * downsample
        gx, gy = np.meshgrid(xs, ys)
        tissue = self.in_tissue(gx, gy)
        texture = 0.06 * np.sin(gx / 37.0) * np.cos(gy / 23.0) + 0.04 * np.sin((gx + gy) / 11.0)
        image = np.where(tissue[..., None], STROMA_RGB * (1 + texture[..., None]), GLASS_RGB)
        self._draw_nuclei(image, gx, gy, x0 * downsample, y0 * downsample, xs[-1], ys[-1], downsample)
        return np.clip(image, 0, 255).astype(np.uint8)

    def _draw_nuclei(
        self,
        image: np.ndarray,
        gx: np.ndarray,
        gy: np.ndarray,
        left: float,
        top: float,
        right: float,
        bottom: float,
        downsample: float,
    ) -> None:
        reach = self.radius_a.max() + 2
        rows = slice(max(0, int((top - reach) / self.spacing_px) - 1), int((bottom + reach) / self.spacing_px) + 2)
        cols = slice(max(0, int((left - reach) / self.spacing_px) - 1), int((right + reach) / self.spacing_px) + 2)
        selected = np.nonzero(self.present[rows, cols])
        for r, c in zip(selected[0] + rows.start, selected[1] + cols.start):
            cx, cy, a = self.centre_x[r, c], self.centre_y[r, c], self.radius_a[r, c]
            i0 = max(0, int((cy - a - top) / downsample) - 1)
            i1 = max(0, int((cy + a - top) / downsample) + 2)
            j0 = max(0, int((cx - a - left) / downsample) - 1)
            j1 = max(0, int((cx + a - left) / downsample) + 2)
            if i0 >= image.shape[0] or j0 >= image.shape[1] or i1 <= 0 or j1 <= 0:
                continue
            dx, dy = gx[i0:i1, j0:j1] - cx, gy[i0:i1, j0:j1] - cy
            cos, sin = np.cos(self.angle[r, c]), np.sin(self.angle[r, c])
            distance = ((dx * cos + dy * sin) / a) ** 2 + ((-dx * sin + dy * cos) / self.radius_b[r, c]) ** 2
            weight = np.clip((1.0 - distance) * 4, 0, 1)[..., None]  # soft edge
            chromatin = 1 + 0.12 * np.sin(dx * 1.3) * np.cos(dy * 1.1)
            colour = NUCLEUS_RGB * self.darkness[r, c] * chromatin[..., None]
            block = image[i0:i1, j0:j1]
            block[:] = block * (1 - weight) + colour * weight


def _tiles(slide: SyntheticSlide, width: int, height: int, downsample: float, tile_px: int) -> Iterator[np.ndarray]:
    for y in range(0, height, tile_px):
        for x in range(0, width, tile_px):
            yield slide.render(x, y, tile_px, tile_px, downsample)


def write_synthetic_slide(
    path: str | Path,
    width: int,
    height: int,
    mpp: float = 0.25,
    kind: str = "svs",
    tile_px: int = 512,
    seed: int = 0,
    min_level_px: int = 1024,
    quality: int = 85,
) -> Path:
    """Write a pyramidal JPEG-tiled slide: ``kind`` ``svs`` (Aperio), ``tiff`` (generic: one page per level) or
    ``ome-tiff`` (the reduced levels in SubIFDs of the first page, as QuPath and bfconvert write them).

    Levels halve until the longer side is below ``min_level_px``. Pixel size goes into the TIFF resolution tags
    (and the Aperio description for ``svs``, the OME metadata for ``ome-tiff``).
    """
    path = Path(path)
    slide = SyntheticSlide(width, height, mpp, seed)
    downsamples = [1]
    while -(-max(width, height) // downsamples[-1]) >= min_level_px * 2:
        downsamples.append(downsamples[-1] * 2)
    with tifffile.TiffWriter(path, bigtiff=width * height > 2**31, ome=kind == "ome-tiff") as writer:
        for downsample in downsamples:
            level_w, level_h = -(-width // downsample), -(-height // downsample)
            level_mpp = mpp * downsample
            options: dict[str, Any] = {}
            if kind == "svs":
                options["description"] = (
                    f"Aperio Image Library v12.0.15 \n{width}x{height} [0,0 {width}x{height}] "
                    f"({tile_px}x{tile_px}) JPEG/RGB Q={quality}|AppMag = {round(10 / mpp)}|"
                    f"MPP = {level_mpp}"
                )
            if kind == "ome-tiff" and downsample == 1:
                options.update(
                    subifds=len(downsamples) - 1, metadata={"axes": "YXS", "PhysicalSizeX": mpp, "PhysicalSizeY": mpp}
                )
            else:
                options["metadata"] = None
            writer.write(
                _tiles(slide, level_w, level_h, downsample, tile_px),
                shape=(level_h, level_w, 3),
                dtype=np.uint8,
                tile=(tile_px, tile_px),
                compression="jpeg",
                compressionargs={"level": quality},
                photometric="rgb",
                resolution=(1e4 / level_mpp, 1e4 / level_mpp),
                resolutionunit="CENTIMETER",
                subfiletype=0 if downsample == 1 else 1,
                **options,
            )
    return path

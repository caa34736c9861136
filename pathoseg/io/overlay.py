"""QC overlay: a thumbnail with nucleus outlines coloured by class."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pathoseg.io.files import atomic_path


def draw_overlay(
    thumbnail: np.ndarray, outlines: Iterable[tuple[np.ndarray, Sequence[int]]], scale: float
) -> Image.Image:
    """Thumbnail (h, w, 3) uint8 with outlines drawn; each outline (K, 2) in the coordinates that ``scale`` maps to
    thumbnail pixels (thumbnail = coords * scale)."""
    image = Image.fromarray(thumbnail).convert("RGB")
    draw = ImageDraw.Draw(image)
    width = 1 if scale < 0.5 else 2
    for ring, color in outlines:
        points = [tuple(p) for p in (np.asarray(ring) * scale).tolist()]
        if len(points) >= 3:
            draw.polygon(points, outline=tuple(color), width=width)
        elif points:
            draw.point(points[0], fill=tuple(color))
    return image


def draw_dots(thumbnail: np.ndarray, points: Iterable[tuple[np.ndarray, np.ndarray]], scale: float) -> Image.Image:
    """Thumbnail (h, w, 3) uint8 with one pixel per point, for nuclei too small to outline at this scale; each item
    is (N, 2) positions (x, y) in the coordinates that ``scale`` maps to thumbnail pixels, and (N, 3) colours."""
    image = np.array(thumbnail[..., :3], np.uint8)
    height, width = image.shape[:2]
    for xy, colors in points:
        cols, rows = (np.asarray(xy, float).reshape(-1, 2) * scale).astype(int).T
        inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
        image[rows[inside], cols[inside]] = np.asarray(colors, np.uint8).reshape(-1, 3)[inside]
    return Image.fromarray(image)


def save_png(image: Image.Image, path: str | Path) -> None:
    """Save a PNG atomically."""
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")

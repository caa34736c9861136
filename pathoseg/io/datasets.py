"""Annotated datasets in the folder layout of ``shared/data``.

A dataset folder holds ``images/<id>.png|jpg`` (RGB), ``labels/<id>.png`` (uint16 instances),
optional ``types/<id>.png`` (uint8 classes) with ``classes.json``, and ``MANIFEST.csv`` with ``id`` and ``mpp``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.transform import rescale

from pathoseg.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


@dataclass
class Sample:
    """One annotated image at ``mpp`` microns per pixel."""

    id: str
    image: np.ndarray  # (H, W, 3) uint8
    instances: np.ndarray  # (H, W) int32
    types: np.ndarray | None  # (H, W) uint8, None where the dataset has no classes
    mpp: float = 0.25


def read_manifest(folder: Path) -> dict[str, float]:
    """``{id: mpp}`` from a dataset folder's MANIFEST.csv."""
    manifest = Path(folder) / "MANIFEST.csv"
    if not manifest.is_file():
        raise InputError(f"{manifest}: missing MANIFEST.csv (columns id, mpp)")
    with manifest.open(newline="") as handle:
        return {row["id"]: float(row["mpp"]) for row in csv.DictReader(handle)}


def read_class_names(folder: Path) -> dict[int, str] | None:
    """A dataset's ``classes.json`` as ``{class id: name}``; None where it has none."""
    path = Path(folder) / "classes.json"
    if not path.is_file():
        return None
    return {int(k): v for k, v in json.loads(path.read_text()).items()}


def find_image(folder: Path, sample_id: str) -> Path:
    """The image file of ``sample_id`` in a dataset folder, whichever of the image suffixes it has."""
    for suffix in IMAGE_SUFFIXES:
        path = Path(folder) / "images" / f"{sample_id}{suffix}"
        if path.is_file():
            return path
    raise InputError(f"{folder}/images: no image for id {sample_id!r}")


def resample_sample(sample: Sample, factor: float) -> Sample:
    """Resample image (bilinear) and maps (nearest) by ``factor`` (> 1 enlarges)."""
    if abs(factor - 1) < 1e-3:
        return sample

    def nearest(labels: np.ndarray) -> np.ndarray:
        """A label map resampled by nearest neighbour."""
        return rescale(labels, factor, order=0, preserve_range=True, anti_aliasing=False).astype(labels.dtype)

    types = None if sample.types is None else nearest(sample.types)
    return Sample(
        sample.id, resample_image(sample.image, factor), nearest(sample.instances), types, sample.mpp / factor
    )


def resample_image(image: np.ndarray, factor: float) -> np.ndarray:
    """(H, W, 3) uint8 image resampled by ``factor`` (> 1 enlarges; bilinear, anti-aliased when shrinking)."""
    if abs(factor - 1) < 1e-3:
        return image
    return rescale(image, factor, order=1, channel_axis=-1, preserve_range=True).round().astype(np.uint8)


def load_dataset(
    folder: str | Path, model_mpp: float | None, ids: list[str] | None = None, use_types: bool = True
) -> list[Sample]:
    """Read a dataset folder, resampled to ``model_mpp``.

    Parameters
    ----------
    folder : dataset folder (see module docstring).
    model_mpp : microns per pixel the samples are resampled to; None keeps each image's own (MANIFEST.csv).
    ids : subset of ids to read (default all, in MANIFEST order).
    use_types : read ``types/`` when present.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    samples = []
    for sample_id in ids if ids is not None else list(manifest):
        image = np.asarray(Image.open(find_image(folder, sample_id)).convert("RGB"))
        instances = np.asarray(Image.open(folder / "labels" / f"{sample_id}.png")).astype(np.int32)
        types_path = folder / "types" / f"{sample_id}.png"
        types = np.asarray(Image.open(types_path)).astype(np.uint8) if use_types and types_path.is_file() else None
        sample = Sample(sample_id, image, instances, types, manifest[sample_id])
        samples.append(sample if model_mpp is None else resample_sample(sample, manifest[sample_id] / model_mpp))
    return samples

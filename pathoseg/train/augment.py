"""Augmentation for H&E (and IHC) training crops.

Every function takes a numpy random Generator and returns new arrays; images are (H, W, 3) uint8 RGB, instance
maps (H, W) integer and type maps (H, W) uint8 or None.
"""

from __future__ import annotations

import io
from typing import cast

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.color import hed2rgb, rgb2hed
from skimage.transform import resize

BACKGROUND_RGB = 235  # glass: what zoomed-out crops are padded with


def scaled_crop(
    rng: np.random.Generator,
    image: np.ndarray,
    maps: list[np.ndarray | None],
    size_px: int,
    scale_range: tuple[float, float],
) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Random crop of ``size_px / scale`` pixels, resized to ``size_px`` (scale jitter)."""
    scale = rng.uniform(*scale_range)
    window = int(round(size_px / scale))
    height, width = image.shape[:2]
    pad_y, pad_x = max(0, window - height), max(0, window - width)
    if pad_y or pad_x:
        pads = ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2))
        image = np.pad(image, (*pads, (0, 0)), constant_values=BACKGROUND_RGB)
        maps = [None if m is None else np.pad(m, pads) for m in maps]
        height, width = image.shape[:2]
    top = rng.integers(0, height - window + 1)
    left = rng.integers(0, width - window + 1)
    box = (slice(top, top + window), slice(left, left + window))
    image = image[box]
    maps = [None if m is None else m[box] for m in maps]
    if window != size_px:
        image = (
            resize(image, (size_px, size_px), order=1, preserve_range=True, anti_aliasing=False)
            .round()
            .astype(np.uint8)
        )
        maps = [
            None
            if m is None
            else resize(m, (size_px, size_px), order=0, preserve_range=True, anti_aliasing=False).astype(m.dtype)
            for m in maps
        ]
    return image, maps


def flip_rotate(rng: np.random.Generator, arrays: list[np.ndarray | None]) -> list[np.ndarray | None]:
    """The same random flip and 90-degree rotation applied to every array (first two axes)."""
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    out = []
    for array in arrays:
        if array is not None:
            array = np.rot90(array, k, axes=(0, 1))
            array = np.ascontiguousarray(array[:, ::-1] if flip else array)
        out.append(array)
    return out


def elastic(
    rng: np.random.Generator, image: np.ndarray, maps: list[np.ndarray | None], amplitude_px: float = 2.0, grid: int = 4
) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Small smooth deformation from a coarse random displacement field."""
    height, width = image.shape[:2]
    coarse = rng.normal(0, amplitude_px, size=(2, grid, grid))
    field = np.stack([resize(c, (height, width), order=3) for c in coarse])
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    coords = np.stack([rows + field[0], cols + field[1]])
    warped = np.stack(
        [ndimage.map_coordinates(image[..., c], coords, order=1, mode="reflect") for c in range(3)], axis=-1
    )
    maps = [None if m is None else ndimage.map_coordinates(m, coords, order=0, mode="constant") for m in maps]
    return warped, maps


def stain_jitter(rng: np.random.Generator, image: np.ndarray, sigma: float = 0.05, bias: float = 0.02) -> np.ndarray:
    """Scale and shift each stain's optical density in HED space (Tellez et al. 2018)."""
    hed = rgb2hed(image)
    hed = hed * rng.uniform(1 - sigma * 3, 1 + sigma * 3, size=3) + rng.uniform(-bias, bias, size=3)
    return (np.clip(hed2rgb(hed), 0, 1) * 255).round().astype(np.uint8)


def dab_recolour(rng: np.random.Generator, image: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """Re-synthesise an H&E crop as hematoxylin-DAB IHC.

    Eosin is removed, hematoxylin lightened to counterstain tones, a random fraction of the nuclei carries DAB at
    a random strength (brown nuclei are nuclei too) with the granular texture of Ki-67 staining, and sometimes brown
    non-nuclear material is added as a distractor that must not be taken for nuclei: patches in the stroma, and
    halos of cytoplasmic DAB around positive nuclei (which would otherwise be split or grown into the nucleus).
    Some negative nuclei lie out of the focal plane, as in thick IHC sections: pale and blurred, still counted.
    """
    hed = rgb2hed(image)
    hed[..., 1] *= rng.uniform(0.0, 0.2)
    hed[..., 0] *= rng.uniform(0.35, 1.0)  # down to faint counterstain: pale negatives count in the index too
    labels = np.unique(instances)[1:]
    positive = labels[rng.random(labels.size) < rng.uniform(0.05, 0.7)]
    # One pixel beyond the annotated outline too: outlines are drawn tight, and a blue rim would be a false cue.
    mask = ndimage.binary_dilation(np.isin(instances, positive)) & np.isin(instances, np.append(positive, 0))
    if rng.random() < 0.5:
        negatives = np.setdiff1d(labels, positive)
        defocus_nuclei(rng, hed, np.isin(instances, negatives[rng.random(negatives.size) < rng.uniform(0.1, 0.4)]))
    if mask.any():
        add_nuclear_dab(rng, hed, mask, halo_outside=instances == 0)
    if rng.random() < 0.5:
        field = ndimage.gaussian_filter(rng.random(instances.shape), sigma=rng.uniform(3, 10))
        level = np.quantile(field, rng.uniform(0.8, 0.97))
        soft_edge = np.clip((field - level) / (field.max() - level + 1e-9) * 4, 0, 1) * (instances == 0)
        hed[..., 2] += rng.uniform(0.05, 0.35) * soft_edge * granular_texture(rng, instances.shape)
    return (np.clip(hed2rgb(hed), 0, 1) * 255).round().astype(np.uint8)


def add_nuclear_dab(rng: np.random.Generator, hed: np.ndarray, mask: np.ndarray, halo_outside: np.ndarray) -> None:
    """Stain the (H, W) ``mask`` nuclei of an (H, W, 3) HED image with granular DAB in place, their hematoxylin
    lightened as DAB masks it; half the time with a halo of fainter cytoplasmic DAB reaching into ``halo_outside``."""
    strength = rng.uniform(0.4, 1.0)
    # Capped at the nuclei's median hematoxylin, so the dense rim of the nuclear membrane does not become a dark
    # brown outline (a cue real Ki-67 staining does not give).
    hematoxylin = np.minimum(hed[..., 0], np.median(hed[..., 0][mask]))
    dab = strength * hematoxylin * rng.uniform(0.8, 2.0) * granular_texture(rng, mask.shape)
    counterstain_kept = 1 - strength * rng.uniform(0.5, 1.0)
    hed[..., 2][mask] += dab[mask]
    hed[..., 0][mask] = hematoxylin[mask] * counterstain_kept
    if rng.random() < 0.5:
        halo = ndimage.binary_dilation(mask, iterations=int(rng.integers(2, 7))) & halo_outside & ~mask
        hed[..., 2][halo] += rng.uniform(0.2, 0.6) * dab[mask].mean() * granular_texture(rng, mask.shape)[halo]
        hed[..., 0][halo] *= counterstain_kept


def defocus_nuclei(rng: np.random.Generator, hed: np.ndarray, mask: np.ndarray) -> None:
    """Put the (H, W) ``mask`` nuclei of an (H, W, 3) HED image out of focus in place: their hematoxylin blurred
    (sigma 1.5-3.5 px) and faded, blended in over a soft-edged neighbourhood so no outline of the mask shows."""
    if not mask.any():
        return
    sigma = rng.uniform(1.5, 3.5)
    faded = ndimage.gaussian_filter(hed[..., 0], sigma) * rng.uniform(0.4, 0.8)
    weight = ndimage.gaussian_filter(ndimage.binary_dilation(mask, iterations=round(sigma)).astype(float), 1.5)
    hed[..., 0] = (1 - weight) * hed[..., 0] + weight * faded


def granular_texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) positive multiplicative field around 1 with speckles 1-3 px across, as DAB chromogen deposits."""
    grain = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=rng.uniform(0.7, 1.5))
    return np.clip(1 + rng.uniform(0.2, 0.6) * grain / (grain.std() + 1e-6), 0.2, None)


def rescan_at_lower_resolution(
    rng: np.random.Generator, image: np.ndarray, factor_range: tuple[float, float] = (1.6, 2.4)
) -> np.ndarray:
    """What a 20x scanner sees, brought back to the model's resolution: half the time the softer optics of a 20x
    objective (lower numerical aperture, looser focus), anti-aliased downsampling by ~2x, sometimes JPEG, then
    bilinear upsampling (as the tiler upsamples a 20x slide)."""
    height, width = image.shape[:2]
    factor = rng.uniform(*factor_range)
    if rng.random() < 0.5:
        image = blur(rng, image, max_sigma=1.0)
    small = (
        resize(image, (round(height / factor), round(width / factor)), order=1, anti_aliasing=True, preserve_range=True)
        .round()
        .astype(np.uint8)
    )
    if rng.random() < 0.5:
        small = jpeg_noise(rng, small, (60, 95))
    return resize(small, (height, width), order=1, preserve_range=True).round().astype(np.uint8)


def blur(rng: np.random.Generator, image: np.ndarray, max_sigma: float = 1.2) -> np.ndarray:
    """Gaussian blur of a random sigma up to ``max_sigma`` px."""
    sigma = rng.uniform(0.3, max_sigma)
    return ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0))


def jpeg_noise(rng: np.random.Generator, image: np.ndarray, quality_range: tuple[int, int] = (40, 90)) -> np.ndarray:
    """The image through JPEG at a random quality."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(rng.integers(*quality_range)))
    return np.asarray(Image.open(buffer).convert("RGB"))


def brightness_contrast(rng: np.random.Generator, image: np.ndarray, amount: float = 0.1) -> np.ndarray:
    """Random brightness and contrast changes of up to ``amount``."""
    mean = image.mean()
    contrast = rng.uniform(1 - amount, 1 + amount)
    brightness = rng.uniform(-amount, amount) * 255
    return np.clip((image - mean) * contrast + mean + brightness, 0, 255).astype(np.uint8)


def augment_sample(
    rng: np.random.Generator,
    image: np.ndarray,
    instances: np.ndarray,
    types: np.ndarray | None,
    size_px: int,
    scale_range: tuple[float, float] = (0.8, 1.25),
    p_dab: float = 0.25,
    p_low_resolution: float = 0.0,
    low_resolution_factor: tuple[float, float] = (1.6, 2.4),
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The full training augmentation: crop with scale jitter, geometry, elastic, IHC re-synthesis, stain,
    brightness, lower scan resolution, blur, JPEG."""
    maps: list[np.ndarray | None] = [instances, types]
    image, maps = scaled_crop(rng, image, maps, size_px, scale_range)
    rotated = flip_rotate(rng, [image, *maps])
    image, maps = cast(np.ndarray, rotated[0]), rotated[1:]
    if rng.random() < 0.3:
        image, maps = elastic(rng, image, maps)
    instances, types = cast(np.ndarray, maps[0]), maps[1]
    if rng.random() < p_dab:
        image = dab_recolour(rng, image, instances)
    if rng.random() < 0.8:
        image = stain_jitter(rng, image)
    if rng.random() < 0.5:
        image = brightness_contrast(rng, image)
    if rng.random() < p_low_resolution:
        image = rescan_at_lower_resolution(rng, image, low_resolution_factor)
    elif rng.random() < 0.2:
        image = blur(rng, image)
    if rng.random() < 0.2:
        image = jpeg_noise(rng, image)
    return image, instances, types

"""int8 versions of a model: OpenVINO's own post-training quantisation (NNCF), calibrated on training crops.

The result is an OpenVINO IR (``.xml`` + ``.bin``) of the whole inference graph (uint8 patches in, maps out) that
``OpenVinoEngine`` runs for precision ``int8``. NNCF is needed only to make it (``pip install nncf``), not to run it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from pathoseg.io.datasets import Sample
from pathoseg.models.engines import InferenceGraph, openvino_model
from pathoseg.models.hovernet import fused_for_inference
from pathoseg.models.weights import WEIGHTS_DIR, LoadedModel, load_model, register, registered_models, sha256_of

log = logging.getLogger(__name__)

CALIBRATION_PX = 256  # patch side; the IR is reshaped to the run's patches when compiled


def calibration_patches(
    samples: list[Sample], n_patches: int, seed: int = 0, size_px: int = CALIBRATION_PX
) -> list[np.ndarray]:
    """``n_patches`` (1, size_px, size_px, 3) uint8 crops, images drawn by area (reflect-padded where smaller)."""
    rng = np.random.default_rng(seed)
    areas = np.array([s.image.shape[0] * s.image.shape[1] for s in samples], float)
    patches = []
    for index in rng.choice(len(samples), size=n_patches, p=areas / areas.sum()):
        image = samples[index].image
        pad = [(0, max(0, size_px - side)) for side in image.shape[:2]]
        image = np.pad(image, [*pad, (0, 0)], mode="reflect")
        y, x = (int(rng.integers(0, side - size_px + 1)) for side in image.shape[:2])
        patches.append(np.ascontiguousarray(image[None, y : y + size_px, x : x + size_px]))
    return patches


def quantize(loaded: LoadedModel, patches: list[np.ndarray], xml_path: Path) -> Path:
    """Quantise ``loaded``'s inference graph to int8 with NNCF on ``patches`` and save it as ``xml_path`` (.bin
    beside it)."""
    import nncf
    import openvino as ov

    size_px = patches[0].shape[1]
    model = openvino_model(InferenceGraph(fused_for_inference(loaded.network)), 1, size_px)
    quantised = nncf.quantize(model, nncf.Dataset(patches), subset_size=len(patches))
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    partial = xml_path.with_name(xml_path.stem + ".partial.xml")
    ov.save_model(quantised, partial, compress_to_fp16=False)
    os.replace(partial.with_suffix(".bin"), xml_path.with_suffix(".bin"))
    os.replace(partial, xml_path)
    return xml_path


def publish_int8(name: str, patches: list[np.ndarray]) -> Path:
    """Quantise the shipped model ``name`` into the package (``<name>.int8.xml/.bin``) and register it, tied to the
    checkpoint's sha256 (publishing new weights drops it)."""
    loaded = load_model(name)
    xml_path = quantize(loaded, patches, WEIGHTS_DIR / f"{name}.int8.xml")
    entry = registered_models()[name]
    register(
        name,
        {
            **entry,
            "int8": {
                "xml": xml_path.name,
                "bin_sha256": sha256_of(xml_path.with_suffix(".bin")),
                "checkpoint_sha256": loaded.sha256,
            },
        },
    )
    log.info("%s: int8 version %s", name, xml_path)
    return xml_path

"""int8 versions made by OpenVINO's NNCF: quantisation of a real model, the shipped int8 version against fp32 on a
real tile, and the checksum that ties it to its weights."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import shared
from PIL import Image

from pathoseg.config import load_config
from pathoseg.evaluation import nuclei_of_maps
from pathoseg.io.datasets import Sample
from pathoseg.metrics import instance_metrics
from pathoseg.models import weights
from pathoseg.models.engines import openvino_available
from pathoseg.models.infer import Predictor
from pathoseg.models.weights import CheckpointError, int8_ir_of, load_model
from pathoseg.region import RegionSettings
from pathoseg.synthetic import SyntheticSlide

pytestmark = pytest.mark.skipif(not openvino_available(), reason="openvino is not installed")
CPU = torch.device("cpu")


def synthetic_tile(side_px: int, seed: int) -> np.ndarray:
    return SyntheticSlide(side_px, side_px, seed=seed).render(0, 0, side_px, side_px, 1.0)


def test_quantised_model_runs_at_the_runs_patch_size_and_agrees_with_fp32(tmp_path):
    pytest.importorskip("nncf")
    from pathoseg.models.quantize import calibration_patches, quantize

    loaded = load_model("pathoseg-light")
    samples = [Sample(str(seed), synthetic_tile(300, seed), np.zeros((300, 300), np.int32), None) for seed in (1, 2)]
    patches = calibration_patches(samples, 4, size_px=128)
    assert [p.shape for p in patches] == [(1, 128, 128, 3)] * 4
    xml = quantize(loaded, patches, tmp_path / "light.int8.xml")
    assert xml.is_file() and xml.with_suffix(".bin").is_file() and not list(tmp_path.glob("*partial*"))
    image = synthetic_tile(400, 3)
    fp32 = Predictor(loaded.network, CPU, patch_px=256, context_px=16, precision="fp32").predict(image)
    int8 = Predictor(loaded.network, CPU, patch_px=256, context_px=16, precision="int8", int8_ir=xml)
    assert int8.precision == "int8"
    maps = int8.predict(image)
    assert maps.np_prob.shape == fp32.np_prob.shape
    assert np.abs(maps.np_prob - fp32.np_prob).mean() < 0.02
    assert not np.array_equal(maps.np_prob, fp32.np_prob)  # it did run the quantised graph


def test_shipped_int8_version_finds_the_nuclei_fp32_finds():
    xml = int8_ir_of("pathoseg-light")
    if xml is None:
        pytest.skip("pathoseg-light ships no int8 version")
    rgb = np.asarray(Image.open(shared("examples/he-tcga-tile.png")).convert("RGB"))[:512, :512]
    loaded = load_model("pathoseg-light")
    assert loaded.int8_ir == xml
    settings = RegionSettings.from_config(load_config(), loaded.metadata.mpp)
    labels = {
        precision: nuclei_of_maps(
            rgb, Predictor(loaded.network, CPU, precision=precision, int8_ir=xml).predict(rgb), settings
        )[0]
        for precision in ("fp32", "int8")
    }
    agreement = instance_metrics(labels["fp32"], labels["int8"])
    assert labels["fp32"].max() > 60
    assert agreement["dq"] > 0.95 and agreement["pq"] > 0.85


def test_int8_weights_that_do_not_match_the_registry_are_refused(tmp_path, monkeypatch):
    xml = int8_ir_of("pathoseg-light")
    if xml is None:
        pytest.skip("pathoseg-light ships no int8 version")
    for path in (xml, xml.with_suffix(".bin"), weights.REGISTRY):
        shutil.copy(path, tmp_path / path.name)
    with open(tmp_path / xml.with_suffix(".bin").name, "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x7f" * 8)
    network = load_model("pathoseg-light").network
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(weights, "REGISTRY", tmp_path / weights.REGISTRY.name)
    with pytest.raises(CheckpointError, match="int8.bin: sha256"):
        Predictor(network, CPU, precision="int8", int8_ir=tmp_path / xml.name)


def test_new_weights_drop_the_int8_version_of_the_old(tmp_path, monkeypatch):
    registry = json.loads(weights.REGISTRY.read_text())
    if "int8" not in registry["pathoseg-light"]:
        pytest.skip("pathoseg-light ships no int8 version")
    registry["pathoseg-light"]["sha256"] = "0" * 64  # as if other weights had been published under the name
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    monkeypatch.setattr(weights, "REGISTRY", tmp_path / "registry.json")
    assert int8_ir_of("pathoseg-light") is None

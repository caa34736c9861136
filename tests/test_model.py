"""Network, targets, losses, checkpoints, and the shipped model's quality on held-out real data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from skimage.draw import disk

from pathoseg.config import load_config
from pathoseg.evaluation import evaluate_samples
from pathoseg.models.hovernet import HoVerNet, fused_for_inference
from pathoseg.models.infer import Predictor, resolve_device
from pathoseg.models.weights import (CheckpointError, ModelMetadata, load_model, read_checkpoint, save_checkpoint)
from pathoseg.region import RegionSettings
from pathoseg.train.data import load_dataset
from pathoseg.train.loop import TrainConfig
from pathoseg.train.losses import hovernet_loss
from pathoseg.train.targets import hv_targets

from conftest import REPO, shared


@pytest.mark.parametrize("encoder", ["light", "preact-resnet50"])
def test_heads_have_input_size(encoder):
    network = HoVerNet(encoder, n_classes=5).eval()
    with torch.no_grad():
        out = network(torch.rand(1, 3, 64, 96))
    assert out["np"].shape == (1, 2, 64, 96)
    assert out["hv"].shape == (1, 2, 64, 96) and out["hv"].abs().max() <= 1
    assert out["nc"].shape == (1, 5, 64, 96)


def test_batchnorm_folding_keeps_the_function():
    network = HoVerNet("light", n_classes=5)
    for module in network.modules():  # non-trivial running statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    network.eval()
    fused = fused_for_inference(network)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())  # every BN follows a conv
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = network(x), fused(x)
    for head in ("np", "hv", "nc"):
        assert torch.allclose(expected[head], got[head], atol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())  # the original is untouched


def test_light_encoder_is_small():
    assert sum(p.numel() for p in HoVerNet("light").parameters()) < 5e6


def test_hv_targets_of_a_disk():
    instances = np.zeros((41, 41), np.int32)
    instances[disk((20, 20), 10)] = 1
    hv = hv_targets(instances)
    assert hv[:, instances == 0].max() == 0
    assert hv[0, 20, 11] == pytest.approx(-1) and hv[0, 20, 29] == pytest.approx(1)
    assert hv[1, 11, 20] == pytest.approx(-1) and hv[1, 29, 20] == pytest.approx(1)
    assert hv[0, 20, 20] == pytest.approx(0, abs=1e-6)


def test_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    instances = np.zeros((64, 64), np.int32)
    for label, centre in enumerate([(16, 16), (16, 46), (46, 30)], start=1):
        instances[disk(centre, 9, shape=instances.shape)] = label
    image = np.full((64, 64, 3), 230, np.uint8)
    image[instances > 0] = (90, 50, 140)
    batch = {"image": torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255,
             "np": torch.from_numpy((instances > 0).astype(np.int64))[None],
             "hv": torch.from_numpy(hv_targets(instances))[None],
             "nc": torch.from_numpy((instances > 0).astype(np.int64) * 2)[None],
             "has_types": torch.ones(1)}
    network = HoVerNet("light")
    optimiser = torch.optim.Adam(network.parameters(), 3e-3)
    losses = []
    for _ in range(25):
        loss, _ = hovernet_loss(network(batch["image"]), batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_checkpoint_roundtrip_and_checksum(tmp_path):
    network = HoVerNet("light")
    digest = save_checkpoint(tmp_path / "m.pt", network, ModelMetadata(name="m"))
    payload = read_checkpoint(tmp_path / "m.pt", digest)
    assert payload["metadata"]["mpp"] == 0.25
    loaded = load_model(str(tmp_path / "m.pt"))
    assert loaded.sha256 == digest
    with pytest.raises(CheckpointError, match="does not match"):
        read_checkpoint(tmp_path / "m.pt", "0" * 64)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_model(str(tmp_path / "junk.pt"))


def test_shipped_model_metadata():
    loaded = load_model()
    assert loaded.metadata.mpp == 0.25
    assert loaded.metadata.class_names == ["background", "other", "inflammatory", "epithelial", "spindle"]


def test_shipped_model_on_a_held_out_monuseg_image():
    """Held-out (validation) image: the shipped model segments real nuclei, not just anything."""
    config = TrainConfig.from_yaml(REPO / "configs" / "train-light.yaml")
    held_out = config.datasets[0].validation_ids[0]
    samples = load_dataset(shared("monuseg/train"), 0.25, [held_out])
    loaded = load_model()
    settings = RegionSettings.from_config(load_config(), loaded.metadata.mpp)
    result = evaluate_samples(Predictor(loaded.network, resolve_device("cpu")), samples, settings)["overall"]
    # Untrained: ~0. This image is the hardest of the five (shipped model: Dice 0.72, PQ 0.42; the five: 0.80, 0.535).
    assert result["dice"] > 0.68
    assert result["pq"] > 0.38


def _write_disk_dataset(folder, n_images: int = 3, size_px: int = 96) -> None:
    """A dataset folder in shared/data's layout: purple disks on pink, with instance labels and a manifest."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True)
    rows = ["id,mpp,n_nuclei,source"]
    for index in range(n_images):
        instances = np.zeros((size_px, size_px), np.uint16)
        for label in range(1, 6):
            instances[disk(rng.integers(12, size_px - 12, 2), 8, shape=instances.shape)] = label
        image = np.full((size_px, size_px, 3), (235, 200, 220), np.uint8)
        image[instances > 0] = (80, 40, 130)
        Image.fromarray(image).save(folder / "images" / f"img{index}.png")
        Image.fromarray(instances).save(folder / "labels" / f"img{index}.png")
        rows.append(f"img{index},0.25,5,synthetic")
    (folder / "MANIFEST.csv").write_text("\n".join(rows) + "\n")


def test_train_resumes_and_keeps_averaged_weights(tmp_path):
    from pathoseg.train.loop import DatasetSpec, train
    _write_disk_dataset(tmp_path / "data")
    config = TrainConfig(name="tiny", output=str(tmp_path / "run"), input_size_px=64, batch_size=2, steps=3,
                         warmup_steps=1, validate_every=3, loader_workers=0, device="cpu", threads=1,
                         datasets=[DatasetSpec(str(tmp_path / "data"), validation_ids=["img2"])])
    best = train(config)
    assert best.is_file()
    config.steps = 5
    train(config)
    payload = read_checkpoint(tmp_path / "run" / "last.pt")
    extra = payload["extra"]
    assert extra["step"] == 5 and [row["step"] for row in json.loads(extra["history"])] == [3, 5]
    averaged, raw = payload["state_dict"], extra["raw_state_dict"]
    assert averaged.keys() == raw.keys()
    assert any(not torch.equal(averaged[k], raw[k]) for k in raw if raw[k].is_floating_point())
    assert load_model(str(best)).metadata.name == "tiny"


def test_training_configs_share_one_validation_split():
    """Every shipped training config parses, and all validate on the same images (their figures compare)."""
    configs = [TrainConfig.from_yaml(path) for path in sorted((REPO / "configs").glob("train-*.yaml"))]
    assert {config.encoder for config in configs} == {"light", "preact-resnet50"}
    splits = {tuple((spec.path, tuple(spec.validation_ids)) for spec in config.datasets) for config in configs}
    assert len(splits) == 1
    assert len({config.output for config in configs}) == len(configs)

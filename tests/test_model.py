"""Network, targets, losses, checkpoints, and the shipped model's quality on held-out real data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, shared
from scipy import ndimage
from skimage.color import rgb2hed
from skimage.draw import disk

from pathoseg.config import PostprocConfig, load_config
from pathoseg.evaluation import evaluate_samples
from pathoseg.io.datasets import load_dataset
from pathoseg.models.hovernet import HoVerNet, fused_for_inference
from pathoseg.models.infer import Predictor, resolve_device
from pathoseg.models.postproc import instances_from_maps
from pathoseg.models.weights import CheckpointError, ModelMetadata, load_model, read_checkpoint, save_checkpoint
from pathoseg.region import RegionSettings
from pathoseg.train.augment import dab_recolour, defocus_nuclei, rescan_at_lower_resolution
from pathoseg.train.loop import TrainConfig
from pathoseg.train.losses import hovernet_loss
from pathoseg.train.targets import contact_weights, hv_targets, np_targets


@pytest.mark.parametrize("encoder", ["light", "preact-resnet50"])
def test_heads_have_input_size(encoder):
    network = HoVerNet(encoder, n_classes=5).eval()
    with torch.no_grad():
        out = network(torch.rand(1, 3, 64, 96))
    assert out["np"].shape == (1, 2, 64, 96)
    assert out["hv"].shape == (1, 2, 64, 96) and out["hv"].abs().max() <= 1
    assert out["nc"].shape == (1, 5, 64, 96)


def test_subpixel_network_keeps_the_input_size_and_saves_three_quarters_of_the_work():
    network = HoVerNet("light", n_classes=5, np_classes=3, subpixel=2).eval()
    with torch.no_grad():
        out = network(torch.rand(1, 3, 64, 96))
    assert out["np"].shape == (1, 3, 64, 96) and out["nc"].shape == (1, 5, 64, 96)
    assert out["hv"].shape == (1, 2, 64, 96) and out["hv"].abs().max() <= 1
    # each 2x2 block's outputs come from one feature vector, but they differ within the block
    assert (out["np"][..., ::2, ::2] - out["np"][..., 1::2, 1::2]).abs().max() > 0

    def convolution_macs(model: torch.nn.Module, side_px: int) -> int:
        macs = []
        hooks = [
            conv.register_forward_hook(lambda m, i, o: macs.append(o.numel() * m.in_channels * m.weight[0, 0].numel()))
            for conv in model.modules()
            if isinstance(conv, torch.nn.Conv2d)
        ]
        with torch.no_grad():
            model(torch.rand(1, 3, side_px, side_px))
        for hook in hooks:
            hook.remove()
        return sum(macs)

    full = HoVerNet("light", n_classes=5, np_classes=3).eval()
    assert convolution_macs(network, 256) < 0.3 * convolution_macs(full, 256)


def test_subpixel_network_starts_as_the_coarser_model_on_block_means():
    """The warm start of pathoseg-fast v2: v1's function exactly, on 2x2 block means, each output repeated over its
    block."""
    from pathoseg.models.hovernet import subpixel_from

    coarse = HoVerNet("light", n_classes=5, np_classes=3)
    for module in coarse.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    coarse.eval()
    fine = subpixel_from(coarse, 2).eval()
    assert (fine.subpixel, fine.np_classes, fine.n_classes) == (2, 3, 5)
    rgb = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = coarse(torch.nn.functional.avg_pool2d(rgb, 2)), fine(rgb)
    for head in ("np", "hv", "nc"):
        repeated = expected[head].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        assert torch.allclose(repeated, got[head], atol=1e-4)


def test_three_class_nuclear_pixel_head():
    network = HoVerNet("light", n_classes=5, np_classes=3).eval()
    with torch.no_grad():
        assert network(torch.rand(1, 3, 32, 32))["np"].shape == (1, 3, 32, 32)
    predictor = Predictor(network, torch.device("cpu"), patch_px=64, context_px=8, precision="fp32")
    maps = predictor.predict(np.full((40, 50, 3), 120, np.uint8))
    assert maps.interior_prob.shape == maps.np_prob.shape == (40, 50)
    assert np.all(maps.interior_prob <= maps.np_prob + 1e-3)  # interior is a part of the nucleus
    two_class = Predictor(HoVerNet("light"), torch.device("cpu"), patch_px=64, context_px=8)
    assert two_class.predict(np.full((40, 50, 3), 120, np.uint8)).interior_prob is None


def test_nuclear_pixel_targets_mark_a_boundary_band():
    instances = np.zeros((40, 60), np.int32)
    instances[disk((20, 15), 10)] = 1
    instances[disk((20, 34), 10)] = 2  # touches nucleus 1
    two = np_targets(instances)
    assert set(np.unique(two)) == {0, 1} and np.array_equal(two > 0, instances > 0)
    three = np_targets(instances, boundary_px=2)
    assert np.array_equal(three > 0, instances > 0)
    assert three[20, 5] == 0 and three[20, 6] == 2 and three[20, 7] == 2 and three[20, 8] == 1 == three[20, 15]
    touching = np.nonzero((instances[20] == 1) & (instances[20, np.r_[1:60, 59]] == 2))[0][0]
    assert three[20, touching] == 2 and three[20, touching + 1] == 2  # both sides of the contact are boundary


def test_boundary_energy_is_gaussian_then_sobel():
    """The one-pass-per-axis energy equals smoothing with scipy's Gaussian and then differentiating with Sobel."""
    from pathoseg.models.postproc import boundary_energy

    rng = np.random.default_rng(0)
    hv = np.clip(ndimage.gaussian_filter(rng.normal(size=(2, 120, 90)), (0, 3, 3)) * 8, -1, 1).astype(np.float32)
    params = PostprocConfig(hv_smooth_sigma_px=1.3)
    slopes = [
        -ndimage.sobel(ndimage.gaussian_filter(hv[0], 1.3), axis=1),
        -ndimage.sobel(ndimage.gaussian_filter(hv[1], 1.3), axis=0),
    ]
    expected = np.clip(np.maximum(*slopes) / (8 * params.gradient_scale), 0, 1)
    assert expected.max() > 0.5
    np.testing.assert_allclose(boundary_energy(hv, params), expected, atol=1e-5)


def test_marker_opening_is_the_opening_by_a_radius_2_disk():
    """Post-processing opens its markers with the 3x3 cross twice over: the opening by scikit-image's disk(2), up to
    the image's edge, on marker-like masks (smoothed noise at several densities)."""
    from skimage.morphology import disk as disk_footprint

    from pathoseg.models.postproc import dilated_by_cross, eroded_by_cross

    for seed in range(12):
        noise = ndimage.gaussian_filter(np.random.default_rng(seed).random((97, 131)), 1.5)
        markers = noise > np.quantile(noise, 0.3 + 0.05 * seed)
        expected = ndimage.binary_opening(markers, structure=disk_footprint(2))
        assert expected.any() and not expected.all()
        assert np.array_equal(dilated_by_cross(dilated_by_cross(eroded_by_cross(eroded_by_cross(markers)))), expected)


def test_flooding_is_scikit_images_watershed():
    """Setting the markers' interior aside changes no pixel of scikit-image's watershed where the landscape's values
    are distinct (as the post-processing's Gaussian-smoothed energy is where nuclei meet), also where markers reach
    outside the mask. On plateaus (values rounded to a few levels) both break ties by their queue's order, so a few
    contested pixels may go the other way; every piece of an instance still holds its marker."""
    from skimage.segmentation import watershed

    from pathoseg.models.postproc import flooded

    for seed in range(8):
        rng = np.random.default_rng(seed)
        landscape = ndimage.gaussian_filter(rng.random((90, 120)), 2.0)
        plateaus = seed % 2 == 1
        if plateaus:
            landscape = np.round(landscape * 40) / 40
        mask = ndimage.gaussian_filter(rng.random((90, 120)), 3.0) > 0.47
        markers = ndimage.label(landscape < np.quantile(landscape, 0.25))[0]
        expected = watershed(landscape, markers, mask=mask)
        assert len(np.unique(expected)) > 5
        instances = flooded(landscape, markers, mask)
        if not plateaus:
            assert np.array_equal(instances, expected)
            continue
        assert np.array_equal(instances > 0, expected > 0) and np.mean(instances != expected) < 0.02
        for label in np.unique(markers[mask & (markers > 0)]):
            seeded = mask & (markers == label)
            pieces, n_pieces = ndimage.label(instances == label)
            assert (instances[seeded] == label).all() and len(np.unique(pieces[seeded])) == n_pieces


def test_interior_probability_splits_touching_nuclei():
    instances = np.zeros((40, 60), np.int32)
    instances[disk((20, 15), 10)] = 1
    instances[disk((20, 33), 10)] = 2
    np_prob = (instances > 0).astype(np.float32)
    flat_hv = np.zeros((2, 40, 60), np.float32)  # HV maps that see no boundary between the two
    params = PostprocConfig(min_marker_px=4, interior_threshold=0.5)  # off by default: see the model card
    assert instances_from_maps(np_prob, flat_hv, params).max() == 1
    interior = (np_targets(instances, boundary_px=2) == 1).astype(np.float32)
    split = instances_from_maps(np_prob, flat_hv, params, interior)
    assert split.max() == 2 and np.array_equal(split > 0, instances > 0)


def test_lower_resolution_rescan_keeps_size_and_blurs():
    rng = np.random.default_rng(0)
    image = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    rescanned = rescan_at_lower_resolution(rng, image)
    assert rescanned.shape == image.shape and rescanned.dtype == np.uint8
    assert (
        np.abs(np.diff(rescanned.astype(float), axis=1)).mean()
        < 0.6 * np.abs(np.diff(image.astype(float), axis=1)).mean()
    )


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


@pytest.mark.parametrize("np_classes", [2, 3])
def test_training_steps_reduce_the_loss(np_classes):
    torch.manual_seed(0)
    instances = np.zeros((64, 64), np.int32)
    for label, centre in enumerate([(16, 16), (16, 46), (46, 30)], start=1):
        instances[disk(centre, 9, shape=instances.shape)] = label
    image = np.full((64, 64, 3), 230, np.uint8)
    image[instances > 0] = (90, 50, 140)
    batch = {
        "image": torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255,
        "np": torch.from_numpy(np_targets(instances, 2 if np_classes == 3 else 0))[None],
        "hv": torch.from_numpy(hv_targets(instances))[None],
        "nc": torch.from_numpy((instances > 0).astype(np.int64) * 2)[None],
        "has_types": torch.ones(1),
    }
    network = HoVerNet("light", np_classes=np_classes)
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
    assert result["dice"] > 0.7
    assert result["pq"] > 0.38


def _write_disk_dataset(folder, n_images: int = 3, size_px: int = 96, ki67: bool = False) -> None:
    """A dataset folder in shared/data's layout: purple disks on pink, with instance labels and a manifest; with
    ``ki67`` IHC truth instead: blue and brown disks on white, typed Ki67-negative / Ki67-positive."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub in ("images", "labels", "types"):
        (folder / sub).mkdir(parents=True)
    rows = ["id,mpp,n_nuclei,source"]
    for index in range(n_images):
        instances = np.zeros((size_px, size_px), np.uint16)
        for label in range(1, 6):
            instances[disk(rng.integers(12, size_px - 12, 2), 8, shape=instances.shape)] = label
        types = np.where(instances > 0, 1 + (instances % 2 == 0), 0).astype(np.uint8)
        image = np.full((size_px, size_px, 3), (240, 240, 235) if ki67 else (235, 200, 220), np.uint8)
        image[instances > 0] = (80, 40, 130)
        if ki67:
            image[types == 2] = (110, 70, 40)
            Image.fromarray(types).save(folder / "types" / f"img{index}.png")
        Image.fromarray(image).save(folder / "images" / f"img{index}.png")
        Image.fromarray(instances).save(folder / "labels" / f"img{index}.png")
        rows.append(f"img{index},0.25,5,synthetic")
    (folder / "MANIFEST.csv").write_text("\n".join(rows) + "\n")
    if ki67:
        (folder / "classes.json").write_text(json.dumps({"1": "Ki67-negative", "2": "Ki67-positive"}))


def test_augmentation_processes_follow_the_device():
    """Beside a GPU the augmentation is the bottleneck, so ``auto`` gives it every core but one; beside CPU
    training one process, since the model needs the cores; a number is kept."""
    from pathoseg.system import usable_cores
    from pathoseg.train.loop import loader_worker_count

    assert loader_worker_count("auto", torch.device("cpu")) == 1
    assert loader_worker_count("auto", torch.device("cuda", 0)) == max(1, usable_cores() - 1)
    assert loader_worker_count(3, torch.device("cuda", 0)) == 3
    assert TrainConfig.from_yaml(REPO / "configs/train-light-v2.yaml").loader_workers == "auto"


def _tiny_training(tmp_path, name: str, **settings) -> TrainConfig:
    """A training run of 64 px crops, 2 per step, on one CPU thread without loader processes, into tmp_path/run."""
    return TrainConfig(
        name=name,
        output=str(tmp_path / "run"),
        input_size_px=64,
        batch_size=2,
        warmup_steps=1,
        loader_workers=0,
        device="cpu",
        threads=1,
        **settings,
    )


def test_train_resumes_and_keeps_averaged_weights(tmp_path):
    from pathoseg.train.loop import DatasetSpec, train

    _write_disk_dataset(tmp_path / "data")
    _write_disk_dataset(tmp_path / "ki67" / "train", n_images=1, ki67=True)
    config = _tiny_training(
        tmp_path,
        "tiny",
        steps=3,
        validate_every=3,
        datasets=[
            DatasetSpec(str(tmp_path / "data"), validation_ids=["img2"]),
            DatasetSpec(str(tmp_path / "ki67" / "train"), weight=0, validation_ids=["img0"]),
        ],
    )
    best = train(config)
    assert best.is_file()
    history = json.loads(read_checkpoint(best)["extra"]["history"])
    assert "ihc_f1_detection" in history[0]["ki67"] and "ihc_f1_detection" not in history[0][tmp_path.name]
    config.steps = 5
    train(config)
    payload = read_checkpoint(tmp_path / "run" / "last.pt")
    extra = payload["extra"]
    assert extra["step"] == 5 and [row["step"] for row in json.loads(extra["history"])] == [3, 5]
    averaged, raw = payload["state_dict"], extra["raw_state_dict"]
    assert averaged.keys() == raw.keys()
    assert any(not torch.equal(averaged[k], raw[k]) for k in raw if raw[k].is_floating_point())
    assert load_model(str(best)).metadata.name == "tiny"


def test_training_stops_at_its_time_limit_with_the_cosine_run_down(tmp_path):
    from pathoseg.train.loop import DatasetSpec, learning_rate, train

    _write_disk_dataset(tmp_path / "data")
    config = _tiny_training(
        tmp_path,
        "clocked",
        steps=10_000,
        validate_every=10_000,
        subpixel=2,
        contact_weight=5.0,  # the loader's pixel weights reach the loss
        time_limit_minutes=1e-6,
        datasets=[DatasetSpec(str(tmp_path / "data"), validation_ids=["img2"])],
    )
    best = train(config)
    payload = read_checkpoint(tmp_path / "run" / "last.pt")
    assert payload["extra"]["step"] == 1 and best.is_file()  # validated and kept at the step the clock ran out
    assert payload["metadata"]["subpixel"] == 2 and load_model(str(best)).network.subpixel == 2
    assert learning_rate(config, 5, clock_progress=0.5) == pytest.approx(config.lr * 0.51)
    assert learning_rate(config, 5, clock_progress=1.0) == pytest.approx(config.lr * 0.02)
    assert learning_rate(config, 5) > 0.99 * config.lr  # 5 of 10,000 steps: the clock alone runs the cosine down


def test_publish_registers_the_weights_under_the_configs_name_and_version(tmp_path, monkeypatch):
    from pathoseg.models import weights

    network = HoVerNet("light", np_classes=3)
    save_checkpoint(tmp_path / "best.pt", network, ModelMetadata(name="run", np_classes=3), extra={"step": 7})
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path / "package")
    monkeypatch.setattr(weights, "REGISTRY", tmp_path / "package" / "registry.json")
    (tmp_path / "package").mkdir()
    weights.publish_checkpoint(tmp_path / "best.pt", "shipped-light", "2")
    loaded = load_model("shipped-light")
    assert (loaded.metadata.name, loaded.metadata.version, loaded.metadata.np_classes) == ("shipped-light", "2", 3)
    assert "extra" not in read_checkpoint(tmp_path / "package" / "shipped-light.pt")  # weights only


def test_training_configs_share_one_validation_split():
    """Every training config (ablations too) parses and validates on the same MoNuSeg images (their figures
    compare); the configs of the current recipe share the whole split. train-light.yaml records how the shipped v1
    was trained (CoNSeP validation without epithelial nuclei)."""
    paths = sorted([*(REPO / "configs").glob("train-*.yaml"), *(REPO / "configs").glob("ablation-*.yaml")])
    configs = {path.name: TrainConfig.from_yaml(path) for path in paths}
    assert {config.encoder for config in configs.values()} == {"light", "preact-resnet50"}
    monuseg = {
        tuple(spec.validation_ids)
        for config in configs.values()
        for spec in config.datasets
        if spec.path.endswith("monuseg/train")
    }
    assert len(monuseg) == 1 and len(next(iter(monuseg))) == 5
    current = [config for name, config in configs.items() if name != "train-light.yaml"]
    splits = {tuple((spec.path, tuple(spec.validation_ids)) for spec in config.datasets) for config in current}
    assert len(current) >= 2 and len(splits) == 1
    assert len({config.output for config in configs.values()}) == len(configs)


def test_weight_average_forgets_the_initial_weights_early():
    from pathoseg.train.loop import ema_update

    update = ema_update(0.999)
    averaged, current = torch.zeros(3), torch.ones(3)
    assert torch.allclose(update(averaged, current, torch.tensor(0)), torch.full((3,), 0.9))  # decay 0.1 at first
    assert torch.allclose(update(averaged, current, torch.tensor(10**6)), torch.full((3,), 0.001))  # then 0.999
    for n in range(500):
        averaged = update(averaged, current, torch.tensor(n))
    assert averaged.min() > 0.5  # a fixed 0.999 would still be at 1 - 0.999^500 = 0.39


def test_ihc_resynthesis_gives_granular_brown_nuclei_and_brown_halos():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:96, :96]
    instances = np.zeros((96, 96), np.int32)
    for label, (cy, cx) in enumerate([(24, 24), (24, 72), (72, 24), (72, 72)], start=1):
        instances[(yy - cy) ** 2 + (xx - cx) ** 2 < 100] = label
    he = np.where(instances[..., None] > 0, [90, 60, 150], [230, 170, 210]).astype(np.uint8)
    textured, haloed = False, False
    for _ in range(50):  # halos: half the crops, and only around strong positives
        hed = rgb2hed(dab_recolour(rng, he, instances))
        assert hed[..., 1].mean() < rgb2hed(he)[..., 1].mean()
        for label in range(1, 5):
            dab = hed[..., 2][instances == label]
            if dab.mean() > 0.1:
                textured |= dab.std() / dab.mean() > 0.1
                ring = ndimage.binary_dilation(instances == label, iterations=2) & (instances == 0)
                haloed |= hed[..., 2][ring].mean() > hed[..., 2][instances == 0].mean() + 0.02
    assert textured and haloed


def test_defocused_nuclei_are_paler_and_softer_and_the_others_untouched():
    yy, xx = np.mgrid[:96, :96]
    instances = np.zeros((96, 96), np.int32)
    instances[(yy - 24) ** 2 + (xx - 24) ** 2 < 100] = 1
    instances[(yy - 72) ** 2 + (xx - 72) ** 2 < 100] = 2
    hed = np.zeros((96, 96, 3))
    hed[..., 0] = np.where(instances > 0, 0.3, 0.02)
    before = hed.copy()
    defocus_nuclei(np.random.default_rng(0), hed, instances == 1)

    def edge_strength(channel, label):
        ring = ndimage.binary_dilation(instances == label) ^ ndimage.binary_erosion(instances == label)
        return ndimage.gaussian_gradient_magnitude(channel, 1.0)[ring].mean()

    assert hed[..., 0][instances == 1].mean() < 0.85 * before[..., 0][instances == 1].mean()
    assert edge_strength(hed[..., 0], 1) < 0.7 * edge_strength(before[..., 0], 1)
    assert np.array_equal(hed[..., 0][instances == 2], before[..., 0][instances == 2])


def test_postproc_tuning_prefers_the_threshold_that_finds_the_nuclei():
    from pathoseg.train.tune import postproc_grid, tune_postproc

    assert "interior_threshold" in postproc_grid(3) and "interior_threshold" not in postproc_grid(2)
    config = TrainConfig.from_yaml(REPO / "configs" / "train-light.yaml")
    validation = {
        "monuseg": load_dataset(shared("monuseg/train"), 0.25, config.datasets[0].validation_ids[1:2]),
        "consep": load_dataset(shared("consep/train"), 0.25, ["train_7_005"], use_types=False),
    }
    loaded = load_model()
    settings = RegionSettings.from_config(load_config(), loaded.metadata.mpp)
    best, tried = tune_postproc(
        Predictor(loaded.network, resolve_device("cpu")), validation, settings, {"np_threshold": [0.5, 0.97]}
    )
    assert best.np_threshold == 0.5 and best.marker_threshold == settings.postproc.marker_threshold
    assert {"monuseg_pq", "consep_aji", "pq"} <= tried[0].keys()
    assert tried[0]["pq"] == np.mean([tried[0]["monuseg_pq"], tried[0]["consep_pq"]]) > tried[1]["pq"]


def test_class_dice_does_not_punish_a_rare_class_where_it_is_absent():
    """A crop without "other" nuclei must not push the "other" probability to zero (it did: the class collapsed)."""
    from pathoseg.train.losses import soft_dice_loss

    target = torch.zeros(1, 16, 16, dtype=torch.int64)
    target[0, 2:8, 2:8] = 3
    logits = torch.zeros(1, 5, 16, 16)
    logits[0, 3, 2:8, 2:8] = 4
    logits[0, 0][target[0] == 0] = 4
    some_other = logits.clone()
    some_other[0, 1][target[0] == 0] = 2  # "other" probability spread over the background, where it costs nothing
    assert soft_dice_loss(some_other, target) <= soft_dice_loss(logits, target) + 1e-6
    rare = target.clone()
    rare[0, 10:14, 10:14] = 1  # now present: predicting it is rewarded
    with_other = logits.clone()
    with_other[0, 1, 10:14, 10:14] = 6
    assert soft_dice_loss(with_other, rare) < soft_dice_loss(logits, rare) - 0.2
    assert soft_dice_loss(torch.zeros(1, 5, 4, 4), torch.zeros(1, 4, 4, dtype=torch.int64)) == 0  # empty crop


def _two_touching_disks_and_one_apart() -> np.ndarray:
    instances = np.zeros((48, 64), np.int32)
    instances[disk((20, 14), 8, shape=instances.shape)] = 1
    instances[disk((20, 30), 8, shape=instances.shape)] = 2  # 16 px apart: the two touch along a column
    instances[disk((24, 52), 7, shape=instances.shape)] = 3
    return instances


def test_contact_weights_mark_where_two_nuclei_meet():
    instances = _two_touching_disks_and_one_apart()
    weights = contact_weights(instances, 3, 5.0)
    assert set(np.unique(weights)) == {1.0, 5.0}
    contact = weights == 5
    assert np.unique(instances[contact]).tolist() == [0, 1, 2]  # both nuclei and the background beside them
    assert not contact[instances == 3].any() and not contact[:, 40:].any()  # the nucleus on its own
    cols = np.flatnonzero(contact.any(axis=0))
    assert cols.min() >= 22 - 3 - 1 and cols.max() <= 22 + 3  # a band along the contact column (x = 22)
    assert contact[20, 22]


def test_contact_weights_make_the_loss_count_errors_where_nuclei_meet():
    instances = _two_touching_disks_and_one_apart()
    batch = {
        "np": torch.from_numpy(np_targets(instances, 2))[None],
        "hv": torch.from_numpy(hv_targets(instances))[None],
        "nc": torch.zeros(1, *instances.shape, dtype=torch.int64),
        "has_types": torch.zeros(1),
    }
    right = {
        "np": F.one_hot(batch["np"], 3).permute(0, 3, 1, 2).float() * 8,
        "hv": batch["hv"].clone(),
        "nc": torch.zeros(1, 5, *instances.shape),
    }
    weights = torch.from_numpy(contact_weights(instances, 3, 5.0))[None]
    unweighted, _ = hovernet_loss(right, batch)
    with_ones, _ = hovernet_loss(right, {**batch, "weight": torch.ones_like(weights)})
    assert with_ones.item() == pytest.approx(unweighted.item(), rel=1e-6)
    merged = {**right, "hv": right["hv"].clone()}
    merged["hv"][0, 0, :, 18:27] = 0  # the horizontal map flattened where the two meet: one nucleus, not two
    plain, plain_parts = hovernet_loss(merged, batch)
    weighted, weighted_parts = hovernet_loss(merged, {**batch, "weight": weights})
    assert weighted_parts["hv_mse"] > 2 * plain_parts["hv_mse"] and weighted > plain

"""Training loop: sampling, augmentation in a loader process, autocast in the device's fast precision, an
exponential moving average of the weights (what is validated and shipped), validation, resumable checkpoints."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from pathoseg.config import load_config, read_mapping, settings_of
from pathoseg.errors import SettingsError
from pathoseg.evaluation import evaluate_samples, is_positivity_dataset
from pathoseg.io.datasets import Sample, load_dataset, read_class_names, read_manifest
from pathoseg.models.hovernet import HoVerNet, subpixel_from
from pathoseg.models.infer import predictor_for, resolve_device
from pathoseg.models.precision import autocast, resolve_precision
from pathoseg.models.weights import ModelMetadata, build_network, load_model, read_checkpoint, save_checkpoint
from pathoseg.region import RegionSettings
from pathoseg.system import usable_cores
from pathoseg.train.augment import augment_sample
from pathoseg.train.losses import hovernet_loss
from pathoseg.train.targets import contact_weights, hv_targets, np_targets

log = logging.getLogger(__name__)


@dataclass
class DatasetSpec:
    """One training dataset: its folder, sampling weight, whether its classes train the NC head, validation ids."""

    path: str
    weight: float = 1.0
    use_types: bool = False
    validation_ids: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The dataset's name in validation figures: the folder above its split (``monuseg`` of monuseg/train)."""
        return Path(self.path).parent.name

    @cached_property
    def positivity_truth(self) -> bool:
        """Its classes are IHC truth (negative / positive nuclei), scored for positivity rather than type."""
        return is_positivity_dataset(read_class_names(Path(self.path)))


@dataclass
class TrainConfig:
    """A training run's recipe (``configs/train-*.yaml``; ``base:`` inherits another's keys)."""

    name: str
    output: str
    datasets: list[DatasetSpec]
    version: str = "1"  # of the model (the card's); recorded in the checkpoints
    encoder: str = "light"
    mpp: float = 0.25
    input_size_px: int = 256
    batch_size: int = 8
    steps: int = 6000
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    validate_every: int = 250
    checkpoint_every: int = 50
    threads: int = 2  # torch threads of the training process
    loader_workers: int | str = "auto"  # augmentation processes (see loader_worker_count)
    device: str = "auto"
    seed: int = 0
    dab_probability: float = 0.25
    low_resolution_probability: float = 0.0  # crops re-scanned at ~20x and upsampled back
    low_resolution_factor: tuple[float, float] = (1.6, 2.4)  # how much coarser that scan is than the model's mpp
    init_weights: str | None = None  # a fresh run starts from this model's weights (shipped name or checkpoint)
    ema_decay: float = 0.999
    np_classes: int = 2  # 3: background / interior / boundary band of boundary_px
    subpixel: int = 1  # r: the network computes at mpp * r on r x r pixel blocks (models.hovernet.HoVerNet)
    time_limit_minutes: float | None = None  # stop after this long; the cosine then runs on the clock (a GPU lease)
    boundary_px: int = 2
    nc_class_weighting: bool = False  # weigh the NC loss by 1/sqrt(class frequency), clipped to [1, 5]
    precision: str = "auto"
    contact_weight: float = 1.0  # NP CE and HV losses weigh pixels where two nuclei come close this much more
    contact_radius_px: int = 3  # ... within this distance of each other

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a training config; ``base: other.yaml`` (beside it) takes every key not given, so a variant of a
        recipe states only how it differs. Unknown and missing settings are refused by name."""
        raw = read_config_keys(Path(path))
        raw["datasets"] = [
            settings_of(DatasetSpec, spec, f"{path}: datasets[{i}]") for i, spec in enumerate(raw.get("datasets", []))
        ]
        return settings_of(cls, raw, str(path))


def read_config_keys(path: Path) -> dict:
    """A YAML config's keys over those of its ``base`` (a path relative to it), recursively."""
    raw = read_mapping(path)
    base = raw.pop("base", None)
    return {**read_config_keys(path.parent / base), **raw} if base else raw


class TrainingStream(torch.utils.data.IterableDataset):
    """Endless stream of augmented samples: dataset by weight, image by area, random crop."""

    def __init__(self, groups: list[tuple[float, list[Sample], bool]], size_px: int, seed: int, config: TrainConfig):
        super().__init__()
        self.groups = [group for group in groups if group[0] > 0 and group[1]]
        self.size_px, self.seed = size_px, seed
        self.p_dab, self.p_low_resolution = config.dab_probability, config.low_resolution_probability
        self.low_resolution_factor = (config.low_resolution_factor[0], config.low_resolution_factor[1])
        self.boundary_px = config.boundary_px if config.np_classes == 3 else 0
        self.contact_weight, self.contact_radius_px = config.contact_weight, config.contact_radius_px

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0, int(time.time())])
        weights = np.array([w for w, _, _ in self.groups], float)
        while True:
            weight, samples, has_types = self.groups[rng.choice(len(self.groups), p=weights / weights.sum())]
            areas = np.array([s.image.shape[0] * s.image.shape[1] for s in samples], float)
            sample = samples[rng.choice(len(samples), p=areas / areas.sum())]
            image, instances, types = augment_sample(
                rng,
                sample.image,
                sample.instances,
                sample.types if has_types else None,
                self.size_px,
                p_dab=self.p_dab,
                p_low_resolution=self.p_low_resolution,
                low_resolution_factor=self.low_resolution_factor,
            )
            item = {
                "image": torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1),
                "np": torch.from_numpy(np_targets(instances, self.boundary_px)),
                "hv": torch.from_numpy(hv_targets(instances)),
                "nc": torch.from_numpy(
                    types.astype(np.int64) if types is not None else np.zeros(instances.shape, np.int64)
                ),
                "has_types": torch.tensor(float(types is not None)),
            }
            if self.contact_weight != 1:
                pixel_weights = contact_weights(instances, self.contact_radius_px, self.contact_weight)
                item["weight"] = torch.from_numpy(pixel_weights)
            yield item


def split_dataset(spec: DatasetSpec, mpp: float) -> tuple[list[Sample], list[Sample]]:
    """Training samples at ``mpp`` and validation samples at their own resolution (scored as annotated);
    validation keeps IHC truth (negative / positive classes) to be scored."""
    ids = list(read_manifest(Path(spec.path)))
    unknown = set(spec.validation_ids) - set(ids)
    if unknown:
        raise SettingsError(f"{spec.path}: validation ids not in MANIFEST.csv: {sorted(unknown)[:3]}")
    train_ids = [i for i in ids if i not in set(spec.validation_ids)]
    return (
        load_dataset(spec.path, mpp, train_ids, spec.use_types),
        load_dataset(spec.path, None, spec.validation_ids, spec.use_types or spec.positivity_truth),
    )


def learning_rate(config: TrainConfig, step: int, clock_progress: float = 0.0) -> float:
    """Linear warm-up, then a cosine down to 2% of ``lr`` over the steps left, or over the time left where that
    runs out first (``clock_progress``: the share of ``time_limit_minutes`` used)."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = max((step - config.warmup_steps) / max(1, config.steps - config.warmup_steps), clock_progress)
    return config.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def initial_weights(name_or_path: str, subpixel: int) -> dict[str, torch.Tensor]:
    """The state dict a fresh run starts from: a model's weights, converted to ``subpixel`` where it differs."""
    network = load_model(name_or_path).network
    if network.subpixel != subpixel:
        network = subpixel_from(network, subpixel)
    return network.state_dict()


def nc_class_weights(groups: list[tuple[float, list[Sample], bool]], n_classes: int) -> torch.Tensor:
    """(n_classes,) NC loss weights: 1/sqrt of each nucleus class's pixel share relative to the commonest class,
    clipped to [1, 5]; background 1."""
    counts = np.zeros(n_classes)
    for _, samples, has_types in groups:
        for sample in samples if has_types else []:
            if sample.types is not None:
                counts += np.bincount(sample.types.ravel(), minlength=n_classes)[:n_classes]
    nuclei = counts[1:]
    weights = np.ones(n_classes)
    weights[1:] = np.clip(np.sqrt(nuclei.max() / np.maximum(nuclei, 1)), 1, 5) if nuclei.any() else 1
    return torch.tensor(weights, dtype=torch.float32)


def ema_update(decay: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor | int], torch.Tensor]:
    """Exponential moving average with warm-up: the decay is min(decay, (1 + n) / (10 + n)) after n updates, so the
    average forgets the random initial weights within the first few hundred steps (a fixed 0.999 still holds 60%
    of them after 500 steps)."""

    def update(averaged: torch.Tensor, current: torch.Tensor, n_averaged: torch.Tensor | int) -> torch.Tensor:
        """The average moved towards the current weights."""
        n = float(n_averaged)
        return averaged + (current - averaged) * (1 - min(decay, (1 + n) / (10 + n)))

    return update


def loader_worker_count(setting: int | str, device: torch.device) -> int:
    """Augmentation processes: the configured number, or for ``auto`` every usable core but one beside a GPU (on an
    H100 host one process augmented ~15 crops/s, two steps' worth, while the GPU waited) and one beside CPU
    training, whose cores the model needs."""
    if setting != "auto":
        return int(setting)
    return max(1, usable_cores() - 1) if device.type == "cuda" else 1


def _format(metrics: dict) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in metrics.items() if isinstance(v, float))


def train(config: TrainConfig, resume: bool = True) -> Path:
    """Train (or resume) the model described by ``config``; returns the best checkpoint's path."""
    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    log.info("training on %s in %s", device, precision)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    metadata = ModelMetadata(
        name=config.name,
        version=config.version,
        encoder=config.encoder,
        np_classes=config.np_classes,
        subpixel=config.subpixel,
        mpp=config.mpp,
        input_size_px=config.input_size_px,
        training_data=[spec.path for spec in config.datasets],
    )
    # Module.to takes memory_format, which its type stubs leave out
    network = build_network(metadata).to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step, best_pq, history, averaged_state = 0, -1.0, [], None
    last_path, best_path = output / "last.pt", output / "best.pt"
    if resume and last_path.is_file():
        payload = read_checkpoint(last_path)
        extra = payload["extra"]
        # A checkpoint's state_dict holds the averaged weights; the raw ones ride in extra (older runs: none).
        network.load_state_dict(extra.get("raw_state_dict", payload["state_dict"]))
        averaged_state = payload["state_dict"] if "raw_state_dict" in extra else None
        if "optimiser" in extra:  # a checkpoint kept for resuming elsewhere may leave the moments out
            optimiser.load_state_dict(extra["optimiser"])
        step, best_pq, history = extra["step"], extra["best_pq"], json.loads(extra["history"])
        log.info("resumed from %s at step %d (best PQ %.3f)", last_path, step, best_pq)
    elif config.init_weights:
        network.load_state_dict(initial_weights(config.init_weights, config.subpixel))
        log.info("started from the weights of %s", config.init_weights)
    averaged = AveragedModel(network, avg_fn=ema_update(config.ema_decay), use_buffers=True)
    average = cast(HoVerNet, averaged.module)  # what is validated, checkpointed and shipped
    if averaged_state is not None:
        average.load_state_dict(averaged_state)
        averaged.n_averaged.fill_(max(step, 1))

    groups, validation = [], {}
    for spec in config.datasets:
        train_samples, val_samples = split_dataset(spec, config.mpp)
        groups.append((spec.weight, train_samples, spec.use_types))
        validation[spec.name] = (val_samples, spec.use_types, spec.positivity_truth)
        log.info("%s: %d training, %d validation images", spec.path, len(train_samples), len(val_samples))
    class_weights = (
        nc_class_weights(groups, len(metadata.class_names)).to(device) if config.nc_class_weighting else None
    )
    log.info("NC class weights: %s", None if class_weights is None else class_weights.tolist())
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    loader_workers = loader_worker_count(config.loader_workers, device)
    log.info("%d augmentation process(es)", loader_workers)
    loader = torch.utils.data.DataLoader(
        TrainingStream(groups, config.input_size_px, config.seed + step, config),
        batch_size=config.batch_size,
        num_workers=loader_workers,
        persistent_workers=loader_workers > 0,
        prefetch_factor=4 if loader_workers else None,
    )

    def checkpoint(path: Path, metrics: dict) -> None:
        """Save the averaged weights, with the raw ones, the optimiser and the history for resuming."""
        metadata.step, metadata.metrics = step, metrics
        save_checkpoint(
            path,
            average,
            metadata,
            extra={
                "raw_state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
                "optimiser": optimiser.state_dict(),
                "step": step,
                "best_pq": best_pq,
                "history": json.dumps(history),
            },
        )

    run_config = load_config()  # validate what `segment` would output
    settings, positive_dab_od = RegionSettings.from_config(run_config, config.mpp), run_config.stain.positive_dab_od
    network.train()
    started, last_metrics = time.time(), {}
    run_started, limit_s = started, 60 * config.time_limit_minutes if config.time_limit_minutes else math.inf
    for batch in loader:
        if step >= config.steps:
            break
        clock_progress = (time.time() - run_started) / limit_s
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(config, step, clock_progress)
        batch = {k: v.to(device) for k, v in batch.items()}
        images = batch["image"].float().div(255).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            outputs = network(images)
        loss, parts = hovernet_loss(outputs, batch, nc_class_weights=class_weights)
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        averaged.update_parameters(network)
        step += 1
        if step % 10 == 0:
            log.info(
                "step %d loss %.3f %s (%.2f s/step)",
                step,
                loss.item(),
                " ".join(f"{k}={v:.3f}" for k, v in parts.items()),
                (time.time() - started) / 10,
            )
            started = time.time()
        out_of_time = time.time() - run_started >= limit_s
        if step % config.validate_every == 0 or step == config.steps or out_of_time:
            average.eval()
            predictor = predictor_for(average, run_config.model, str(device))
            last_metrics = {
                name: evaluate_samples(
                    predictor,
                    samples,
                    settings,
                    n_classes=len(metadata.class_names) if has_types else None,
                    positive_dab_od=positive_dab_od if positivity else None,
                )["overall"]
                for name, (samples, has_types, positivity) in validation.items()
                if samples
            }
            history.append({"step": step, **last_metrics})
            for name, metrics in last_metrics.items():
                log.info("validation %s step %d: %s", name, step, _format(metrics))
            pq = last_metrics.get("monuseg", next(iter(last_metrics.values()), {})).get("pq", 0.0)
            if pq > best_pq:
                best_pq = pq
                checkpoint(best_path, last_metrics)
                log.info("new best PQ %.3f -> %s", pq, best_path)
            checkpoint(last_path, last_metrics)
        elif step % config.checkpoint_every == 0:
            checkpoint(last_path, last_metrics)
        if out_of_time:
            log.info("stopped at step %d: time limit of %s minutes reached", step, config.time_limit_minutes)
            break
    return best_path

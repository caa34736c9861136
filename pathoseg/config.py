"""Run configuration: dataclasses filled from ``configs/default.yaml`` (shipped in the package) and overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml

from pathoseg.errors import SettingsError

DEFAULT_CONFIG = Path(__file__).parent / "default.yaml"
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
T = TypeVar("T")


class ConfigError(SettingsError):
    """A configuration file or value that cannot be used."""


@dataclass
class ModelConfig:
    """Which model runs, where and how (``model:`` in a run configuration)."""

    name: str = "pathoseg-light"
    device: str = "auto"
    batch_size: int = 0  # 0: 1 on the CPU (fastest, least memory), 8 on a GPU
    patch_px: int = 512
    context_px: int = 16
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 | int8: see models.precision.choose_precision
    runtime: str = "auto"  # auto | torch | openvino: auto = OpenVINO on the CPU where installed
    tta: bool = False  # flip test-time augmentation: 4x the inference


@dataclass
class TilingConfig:
    """Tile, region and margin sizes in model pixels, tissue detection on the thumbnail, and the check of the slide's
    pixel size against its nuclei (``tiling:``)."""

    tile_px: int = 512
    region_px: int = 3072
    margin_px: int = 128
    thumbnail_mpp: float = 8.0
    max_thumbnail_px: int = 4096
    tissue_od_range: list[float] = field(default_factory=lambda: [0.025, 0.06])
    tissue_closing_um: float = 20.0
    min_tissue_um2: float = 2000.0
    max_tissue_hole_um2: float = 5000.0
    # Warn when the nuclei put the slide's µm/px this factor above or below the declared one (measure.magnification:
    # on 118 real images at their true pixel size it went past 1.8x on 3).
    mpp_check_factor: float = 1.8


@dataclass(frozen=True)
class PostprocConfig:
    """Post-processing settings (pixel values at the model's resolution); frozen, as region tasks carry them."""

    np_threshold: float = 0.6
    hv_smooth_sigma_px: float = 1.0
    marker_threshold: float = 0.25
    gradient_scale: float = 0.14  # HV slope (per px) that counts as a full boundary; tuned on validation
    min_marker_px: int = 10
    max_hole_px: int = 64
    min_object_px: int = 10
    interior_threshold: float = 0.0  # three-class heads: markers also need this interior probability (0: off)


@dataclass(frozen=True)
class FilterConfig:
    """Plausibility filters: nuclei outside these are dropped (and counted in the summary)."""

    min_area_um2: float = 6.0
    max_area_um2: float = 500.0
    min_solidity: float = 0.7


@dataclass
class StainConfig:
    """Stain mode, DAB positivity thresholds, stain vectors and the IHC hotspot and index range (``stain:``)."""

    mode: str = "auto"  # auto | he | ihc
    dab_thresholds: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.6])
    stain_matrix: list[list[float]] | None = None
    estimate_vectors: bool = False  # IHC mode: hematoxylin/DAB vectors from the slide's own pixels (Macenko)
    ihc_max_eosin_od: float = 0.03  # auto mode: IHC when the nuclei carry (almost) no eosin
    hotspot_field_um: float = 450.0  # IHC: side of the square field searched for the highest positivity index
    hotspot_min_nuclei: int = 500  # ... among the fields holding at least this many nuclei
    unsure_detection_probability: float = 0.85  # IHC: nuclei detected below this count both ways in the index range

    @property
    def positive_dab_od(self) -> float:
        """DAB OD mean from which a nucleus counts positive: the first bin (1+), as QuPath and the index count."""
        return self.dab_thresholds[0]


@dataclass
class OutputConfig:
    """What is written besides the nuclei (``output:``)."""

    gzip: bool = True
    table: bool = False  # also write nuclei.csv, one row per nucleus
    simplify_px: float = 0.3
    overlay_max_px: int = 2048
    review_square_um: float = 128.0
    # false: once a slide is finished, its store keeps the per-region nuclei (a rerun is instant) but not the pixels
    keep_store_pixels: bool = True


@dataclass
class ClusterConfig:
    """The Dask cluster that runs the region tasks (``cluster:``)."""

    scheduler: str = "local"  # local | inprocess | tcp://host:port
    # auto: system.local_workers sizes the embedded cluster (cores, memory, GPU, regions). Post-processing is
    # single-threaded: 2 x 1 beat 1 x 2 by 36% on 2 cores.
    workers: int | str = "auto"
    threads_per_worker: int = 1
    connect_timeout_s: float = 20.0  # an existing scheduler must answer within this
    worker_timeout_s: float = 120.0  # ... and have a worker within this
    # Dask resources every region task asks for, e.g. {GPU: 1}; null: {GPU: 1} when model.device is cuda.
    region_resources: dict[str, float] | None = None


@dataclass
class Config:
    """A run's configuration: one section per concern, defaults in the dataclasses (``load_config``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    postproc: PostprocConfig = field(default_factory=PostprocConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    stain: StainConfig = field(default_factory=StainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


def _legacy(instance: object, values: dict) -> dict:
    """Settings of older versions, translated: ``model.bf16`` (true meant "the fast precision") -> precision."""
    if isinstance(instance, ModelConfig) and "bf16" in values:
        values = dict(values)
        values.setdefault("precision", "auto" if values.pop("bf16") else "fp32")
    return values


def _merged(instance: Any, values: dict, where: str) -> Any:
    """A copy of the (nested) settings ``instance`` with ``values`` over it; frozen sections are copied too."""
    known = [f.name for f in dataclasses.fields(instance)]
    changes = {}
    for key, value in _legacy(instance, values).items():
        if key not in known:
            raise ConfigError(f"{where}: unknown setting {key!r} (known: {', '.join(known)})")
        current = getattr(instance, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {key} must be a mapping")
            value = _merged(current, value, f"{where}.{key}")
        changes[key] = value
    return dataclasses.replace(instance, **changes)


def is_worker_count(value: object) -> bool:
    """A valid ``cluster.workers``: ``auto`` or a positive whole number."""
    return value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


def read_mapping(path: str | Path) -> dict:
    """The mapping a YAML configuration file holds (empty file: ``{}``); ConfigError naming the file otherwise."""
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read configuration ({error.__class__.__name__})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a configuration must be a mapping")
    return values


def settings_of(cls: type[T], values: dict, where: str) -> T:
    """An instance of the dataclass ``cls`` from ``values``, refusing unknown and missing keys by name."""
    fields = dataclasses.fields(cast(Any, cls))
    known = [f.name for f in fields]
    for key in values:
        if key not in known:
            raise ConfigError(f"{where}: unknown setting {key!r} (known: {', '.join(known)})")
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in values]
    if missing:
        raise ConfigError(f"{where}: missing setting(s) {', '.join(missing)}")
    return cls(**values)


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Defaults from the packaged default.yaml, then ``path`` (a YAML file), then ``overrides`` (nested dict)."""
    config = Config()
    for source in [DEFAULT_CONFIG, path]:
        if source is not None:
            config = _merged(config, read_mapping(source), str(source))
    if overrides:
        config = _merged(config, overrides, "options")
    if config.model.precision not in PRECISIONS:
        raise ConfigError(f"model.precision: {config.model.precision!r} is not one of {', '.join(PRECISIONS)}")
    if not is_worker_count(config.cluster.workers):
        raise ConfigError(f"cluster.workers: {config.cluster.workers!r} is not a positive whole number or auto")
    tiling = config.tiling
    if tiling.tile_px % 16 or tiling.region_px % tiling.tile_px:
        raise ConfigError(
            f"tiling: tile_px ({tiling.tile_px}) must be a multiple of 16 and region_px "
            f"({tiling.region_px}) a multiple of tile_px"
        )
    return config


def as_dict(config: Config) -> dict:
    """The configuration as nested plain values (what a YAML file for ``load_config`` holds)."""
    return dataclasses.asdict(config)

"""Checkpoint format: a state dict plus the metadata a run needs, loaded with ``weights_only=True``.

A checkpoint file is a dict ``{"format": "pathoseg-checkpoint/1", "metadata": {...}, "state_dict": {...}}``.
Shipped models live in ``pathoseg/models/weights/<name>.pt`` and their sha256 is listed in ``registry.json``
beside them; a mismatch is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from pathoseg.errors import InputError
from pathoseg.io.files import atomic_path
from pathoseg.models.hovernet import HoVerNet

FORMAT = "pathoseg-checkpoint/1"
WEIGHTS_DIR = Path(__file__).parent / "weights"
REGISTRY = WEIGHTS_DIR / "registry.json"
DEFAULT_MODEL = "pathoseg-light"


@dataclass
class ModelMetadata:
    """What a checkpoint says about its network and how to use it."""

    name: str
    encoder: str = "light"
    np_classes: int = 2  # 3: background / interior / boundary band
    subpixel: int = 1  # r: the network computes at 1/r of ``mpp``'s resolution (``HoVerNet``)
    mpp: float = 0.25
    input_size_px: int = 256
    class_names: list[str] = field(
        default_factory=lambda: ["background", "other", "inflammatory", "epithelial", "spindle"]
    )
    class_colors: list[list[int]] = field(
        default_factory=lambda: [[0, 0, 0], [120, 120, 120], [255, 0, 0], [0, 160, 0], [0, 80, 255]]
    )
    training_data: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    step: int = 0
    version: str = "1"


@dataclass
class LoadedModel:
    """A model ready to run: network (eval mode), metadata, checkpoint sha256 and its int8 version if shipped."""

    network: HoVerNet
    metadata: ModelMetadata
    sha256: str
    int8_ir: Path | None = None  # OpenVINO IR (.xml, .bin beside it) of the int8 version, where one ships


class CheckpointError(InputError):
    """A checkpoint that cannot be used (wrong format, checksum mismatch, unreadable)."""


def sha256_of(path: str | Path) -> str:
    """The file's sha256, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_network(metadata: ModelMetadata) -> HoVerNet:
    """The untrained network a checkpoint's metadata describes."""
    return HoVerNet(metadata.encoder, len(metadata.class_names), metadata.np_classes, metadata.subpixel)


def save_checkpoint(
    path: str | Path, network: torch.nn.Module, metadata: ModelMetadata, extra: dict | None = None
) -> str:
    """Write a checkpoint atomically; returns its sha256. ``extra`` (e.g. optimiser state) rides along."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "metadata": asdict(metadata),
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
    }
    if extra:
        payload["extra"] = extra
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return sha256_of(path)


def read_checkpoint(path: str | Path, expected_sha256: str | None = None) -> dict:
    """The raw checkpoint dict, after checking format and (if given) checksum."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    digest = sha256_of(path)
    if expected_sha256 and digest != expected_sha256:
        raise CheckpointError(
            f"{path}: sha256 {digest[:12]}... does not match the registry's {expected_sha256[:12]}..."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a bad file
        raise CheckpointError(f"{path}: not a readable checkpoint ({error.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} file")
    payload["sha256"] = digest
    return payload


def registered_models() -> dict[str, dict]:
    """``{name: {"file": ..., "sha256": ...}}`` for the models shipped with the package."""
    if not REGISTRY.is_file():
        return {}
    return json.loads(REGISTRY.read_text())


def resolve_model(name_or_path: str) -> tuple[Path, str | None]:
    """A shipped model's file and expected sha256, or a checkpoint path given directly (no expected sha)."""
    registry = registered_models()
    if name_or_path in registry:
        entry = registry[name_or_path]
        return WEIGHTS_DIR / entry["file"], entry["sha256"]
    path = Path(name_or_path)
    if path.suffix == ".pt" or path.exists():
        return path, None
    raise CheckpointError(f"{name_or_path}: no such model; shipped models: {', '.join(sorted(registry)) or 'none'}")


def int8_ir_of(name_or_path: str) -> Path | None:
    """The int8 OpenVINO IR (.xml) registered for a shipped model, None for others. Its checksum (of the .bin) is
    checked when it is loaded (``read_int8_ir``)."""
    entry = registered_models().get(name_or_path, {})
    int8 = entry.get("int8")
    return WEIGHTS_DIR / int8["xml"] if int8 and int8["checkpoint_sha256"] == entry["sha256"] else None


def check_int8_ir(xml_path: Path) -> None:
    """Refuse an int8 IR whose weights (.bin) do not match the registry's sha256."""
    for entry in registered_models().values():
        int8 = entry.get("int8")
        if int8 and WEIGHTS_DIR / int8["xml"] == xml_path:
            digest = sha256_of(xml_path.with_suffix(".bin"))
            if digest != int8["bin_sha256"]:
                raise CheckpointError(
                    f"{xml_path.with_suffix('.bin')}: sha256 {digest[:12]}... does not match the "
                    f"registry's {int8['bin_sha256'][:12]}..."
                )


def load_model(name_or_path: str = DEFAULT_MODEL) -> LoadedModel:
    """Build the network of a shipped model name or checkpoint path and load its weights (eval mode)."""
    path, expected = resolve_model(name_or_path)
    payload = read_checkpoint(path, expected)
    metadata = ModelMetadata(**payload["metadata"])
    network = build_network(metadata)
    network.load_state_dict(payload["state_dict"])
    network.eval()
    return LoadedModel(network, metadata, payload["sha256"], int8_ir_of(name_or_path))


def register(name: str, entry: dict) -> None:
    """Set a shipped model's registry entry (atomically)."""
    registry = registered_models()
    registry[name] = entry
    with atomic_path(REGISTRY) as temporary:
        temporary.write_text(json.dumps(registry, indent=2, sort_keys=True) + "\n")


def publish_checkpoint(source: str | Path, name: str | None = None, version: str | None = None) -> Path:
    """Copy a training checkpoint into the package (weights only, no optimiser) and register its sha256."""
    payload = read_checkpoint(source)
    metadata = ModelMetadata(**payload["metadata"])
    metadata.name = name or metadata.name
    metadata.version = version or metadata.version
    network = build_network(metadata)
    network.load_state_dict(payload["state_dict"])
    target = WEIGHTS_DIR / f"{metadata.name}.pt"
    digest = save_checkpoint(target, network, metadata)
    register(metadata.name, {"file": target.name, "sha256": digest})  # an int8 version of other weights is dropped
    return target

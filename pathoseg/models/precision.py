"""Numeric precision per device: bfloat16 only where the hardware runs it natively.

On CPUs without AVX-512 BF16 or AMX, PyTorch runs bfloat16 convolutions on a slow fallback kernel (measured 10x
slower than fp32 for ``pathoseg-light`` on a Zen 3 laptop-class CPU), so ``auto`` must not pick it there.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from pathoseg.config import PRECISIONS
from pathoseg.errors import SettingsError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class DeviceFacts:
    """What the precision choice depends on.

    device_type : "cpu" or "cuda".
    cpu_native_bf16 : the CPU has AVX-512 BF16 or AMX tiles.
    cuda_capability : (major, minor) compute capability of the GPU, None on CPU.
    """

    device_type: str
    cpu_native_bf16: bool = False
    cuda_capability: tuple[int, int] | None = None


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX (what oneDNN's fast bfloat16 kernels need)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def device_facts(device: torch.device) -> DeviceFacts:
    """The facts of ``device`` on this machine."""
    if device.type == "cuda":
        return DeviceFacts("cuda", cuda_capability=torch.cuda.get_device_capability(device))
    return DeviceFacts(device.type, cpu_native_bf16=cpu_has_native_bf16())


def choose_precision(requested: str, facts: DeviceFacts, int8_available: bool = False) -> str:
    """The precision to run in: ``requested`` unless it is ``auto``.

    ``auto``: bf16 on CPUs with native bfloat16 and on CUDA GPUs of compute capability 8.0 or newer, fp16 on
    older CUDA GPUs; on other CPUs int8 where ``int8_available`` (the model ships an int8 version, kept only where
    it scored within 0.005 PQ and AJI of fp32, and the runtime is OpenVINO: measured faster than fp32 on AVX2, see
    the model card), fp32 otherwise.
    """
    if requested not in PRECISIONS:
        raise SettingsError(f"precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    if requested == "int8" and not int8_available:
        raise SettingsError(
            "precision int8 needs the OpenVINO runtime on the CPU and a model shipped with an int8 "
            "version (pathoseg info --system lists them)"
        )
    if requested != "auto":
        return requested
    if facts.device_type == "cuda" and facts.cuda_capability is not None:
        return "bf16" if facts.cuda_capability >= (8, 0) else "fp16"
    if facts.device_type == "cpu" and facts.cpu_native_bf16:
        return "bf16"
    if facts.device_type == "cpu" and int8_available:
        return "int8"
    return "fp32"


def resolve_precision(requested: str, device: torch.device, int8_available: bool = False) -> str:
    """``choose_precision`` with the facts of ``device`` on this machine."""
    return choose_precision(requested, device_facts(device), int8_available)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for a resolved precision (no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])

"""Numeric precision per device: bfloat16 only where the hardware runs it natively.

On CPUs without AVX-512 BF16 or AMX, PyTorch runs bfloat16 convolutions on a slow fallback kernel (measured 10x
slower than fp32 for ``pathoseg-light`` on a Zen 3 laptop-class CPU), so ``auto`` must not pick it there.
"""

from __future__ import annotations

import contextlib
import os
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


# oneDNN's instruction-set caps below the first with bfloat16 kernels (AVX512_CORE_BF16). A cap in
# ONEDNN_MAX_CPU_ISA (containers set it; so does emulating an AVX2 CPU) leaves bf16 to the slow reference kernels,
# and OpenVINO refuses to compile bf16 under it, whatever the CPU itself has.
_ONEDNN_ISAS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def onednn_capped_below_bf16() -> bool:
    """Whether ``ONEDNN_MAX_CPU_ISA`` (or its old name ``DNNL_MAX_CPU_ISA``) keeps oneDNN, and so OpenVINO's CPU
    plugin, below AVX-512 BF16."""
    onednn_cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    return onednn_cap.upper() in _ONEDNN_ISAS_WITHOUT_BF16


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX (what oneDNN's fast bfloat16 kernels need), and no instruction-set cap that hides them
    (``onednn_capped_below_bf16``, or ``ATEN_CPU_CAPABILITY`` below avx512, which PyTorch's vector ISA reports)."""
    hardware = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    capped = onednn_capped_below_bf16() or not torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    return bool(hardware) and not capped


def device_facts(device: torch.device) -> DeviceFacts:
    """The facts of ``device`` on this machine."""
    if device.type == "cuda":
        return DeviceFacts("cuda", cuda_capability=torch.cuda.get_device_capability(device))
    return DeviceFacts(device.type, cpu_native_bf16=cpu_has_native_bf16())


def choose_precision(requested: str, facts: DeviceFacts, int8_available: bool = False) -> str:
    """The precision to run in: ``requested`` unless it is ``auto``.

    ``auto``: on CUDA GPUs bf16 from compute capability 8.0, fp16 before. On CPUs int8 where ``int8_available``
    (the model ships an int8 version, kept only where it scored within 0.005 PQ and AJI of fp32, and the runtime is
    OpenVINO): measured faster than fp32 on AVX2 and than bf16 on AVX-512 BF16 with VNNI (see the model card);
    else bf16 where the CPU runs it natively, fp32 elsewhere.
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
    if facts.device_type == "cpu" and int8_available:
        return "int8"
    if facts.device_type == "cpu" and facts.cpu_native_bf16:
        return "bf16"
    return "fp32"


def resolve_precision(requested: str, device: torch.device, int8_available: bool = False) -> str:
    """``choose_precision`` with the facts of ``device`` on this machine."""
    return choose_precision(requested, device_facts(device), int8_available)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for a resolved precision (no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])

"""What this machine is and how fast the model runs on it (``pathoseg info --system`` and the benchmarks)."""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from pathoseg.config import ClusterConfig
from pathoseg.models.engines import choose_runtime, openvino_available
from pathoseg.models.hovernet import HoVerNet
from pathoseg.models.infer import Predictor
from pathoseg.models.precision import cpu_has_native_bf16, resolve_precision


def cpu_model() -> str:
    """The CPU's marketing name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_capability() -> str:
    """One line for benchmark output: model, PyTorch's vector ISA, native bfloat16, cores."""
    bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    return f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()}, {bf16}, {os.cpu_count()} cores)"


# glibc's mallopt parameters (malloc.h), and what a region task's process keeps: arrays up to 1 GiB come from the heap
# (a window's largest is 90 MB), and up to 256 MiB freed at the heap's top stay mapped.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
HEAP_ARRAY_BYTES, KEPT_FREE_BYTES = 2**30, 2**28


def retain_freed_memory() -> bool:
    """Let this process's C heap reuse what it frees (glibc: mallopt); False where it cannot (other C libraries).

    A region task allocates and frees dozens of window-sized arrays (11 Mpx, 11-90 MB each). By default glibc maps
    each one fresh from the kernel and unmaps it when freed, and Dask's workers trim the heap at 64 KB
    (``MALLOC_TRIM_THRESHOLD_``), so every array was paid again in page faults: a fifth of the post-processing's
    time, and a sixth of a run's CPU time went to the kernel. The largest worker's peak grows from 1.26 to 1.48 GB
    (the 20000² benchmark slide, pathoseg-fast), within ``WORKER_MEMORY_BYTES``.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(HEAP_ARRAY_BYTES))
        and mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(KEPT_FREE_BYTES))
    )


# What one embedded-cluster worker may need: its region's maps and labels (3072 px regions) plus the model; peaks of
# 1.2 GB (CPU) and 1.9 GB (with CUDA) were measured, 1.5 GB on the CPU since workers keep freed arrays
# (retain_freed_memory; the CUDA peak not measured again).
WORKER_MEMORY_BYTES = 2 * 2**30
# What one worker holds on a shared GPU: its CUDA context (~0.5 GB) and a batch of 8 patches' activations. An
# estimate, not yet measured: it keeps 16 GB cards to 5 workers.
GPU_WORKER_MEMORY_BYTES = 3 * 2**30


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask: what SLURM or taskset gave it), else all of them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cgroup_memory_headroom_bytes(
    proc_cgroup: Path = Path("/proc/self/cgroup"), cgroup_root: Path = Path("/sys/fs/cgroup")
) -> int | None:
    """What this process's control groups still allow it (limit minus usage, the tightest over the group and its
    ancestors; cgroup v1 and v2): SLURM jobs and containers are capped this way, below what the machine has free.
    None where no limit is set or readable."""
    headrooms = []
    for line in proc_cgroup.read_text().splitlines() if proc_cgroup.is_file() else []:
        _, controllers, group = line.split(":", 2)
        if controllers == "":
            base, limit_name, usage_name = cgroup_root, "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            base, limit_name, usage_name = cgroup_root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        folder = base / group.lstrip("/")
        for level in [folder, *folder.parents]:
            try:
                limit = (level / limit_name).read_text().strip()
                if limit != "max" and int(limit) < 2**60:  # v1 writes "no limit" as a huge number
                    headrooms.append(int(limit) - int((level / usage_name).read_text()))
            except (OSError, ValueError):
                pass
            if level == base:
                break
    return min(headrooms) if headrooms else None


def local_workers(cluster: ClusterConfig, tasks: int | None = None, gpu_memory_bytes: int | None = None) -> int:
    """Worker processes of the embedded cluster: the configured number, or for ``auto`` one per usable core (per
    ``threads_per_worker`` cores), at most one per 2 GiB of the memory available to this process (the machine's,
    or its cgroup's where that is less), one per 3 GiB of the GPU they share (``gpu_memory_bytes``, where they
    run on one) and one per region task (``tasks``, where given: a small image needs no more); at least one."""
    if isinstance(cluster.workers, int):
        return cluster.workers
    available = psutil.virtual_memory().available
    headroom = cgroup_memory_headroom_bytes()
    limits = [
        usable_cores() // cluster.threads_per_worker,
        min(available, available if headroom is None else headroom) // WORKER_MEMORY_BYTES,
    ]
    if gpu_memory_bytes:
        limits.append(gpu_memory_bytes // GPU_WORKER_MEMORY_BYTES)
    if tasks:
        limits.append(tasks)
    return int(max(1, min(limits)))


def system_facts() -> dict:
    """Devices and the choices ``auto`` makes on them."""
    cpu = torch.device("cpu")
    facts = {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "openvino": _openvino_version(),
        "cpu_auto": {"runtime": choose_runtime("auto", cpu), "precision": resolve_precision("auto", cpu)},
    }
    gpus: list[dict] = []
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        device = torch.device("cuda", index)
        gpus.append(
            {
                "name": torch.cuda.get_device_name(device),
                "capability": ".".join(map(str, torch.cuda.get_device_capability(device))),
                "auto_precision": resolve_precision("auto", device),
            }
        )
    return {**facts, "cuda": gpus}


def _openvino_version() -> str | None:
    if not openvino_available():
        return None
    import openvino

    return openvino.__version__.split("-")[0]


def model_mpx_per_second(
    network: HoVerNet,
    device: torch.device,
    precision: str,
    runtime: str,
    seconds: float = 2.0,
    side_px: int | None = None,
    patch_px: int = 512,
    batch_size: int = 0,
    int8_ir: Path | None = None,
) -> float:
    """Model-only throughput: megapixels per second of ``Predictor.predict`` on a (side_px, side_px) image of
    stained-looking noise (no glass, so every patch runs), after one warm-up call. The default side holds one
    batch of patches (one patch on the CPU), so a slow precision (bf16 without native support: minutes per large
    image) is measured in a few patches. ``int8_ir``: the model's int8 version (``LoadedModel.int8_ir``)."""
    predictor = Predictor(network, device, patch_px, 16, batch_size, precision, runtime, int8_ir=int8_ir)
    side_px = side_px or predictor.patches.step * math.ceil(math.sqrt(predictor.batch_size))
    rgb = np.random.default_rng(0).integers(60, 220, (side_px, side_px, 3), dtype=np.uint8)
    predictor.predict(rgb)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        predictor.predict(rgb)
        done += side_px * side_px
    return done / (time.perf_counter() - started) / 1e6


def runtimes_here(device: torch.device) -> list[str]:
    """The runtimes that can run on ``device`` on this machine."""
    return ["torch", "openvino"] if device.type == "cpu" and openvino_available() else ["torch"]

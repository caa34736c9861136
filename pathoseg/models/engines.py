"""Inference engines: what turns a batch of RGB patches into the network's probability maps.

* ``torch``: the network in PyTorch (any device), autocast in the chosen precision.
* ``openvino``: the same weights compiled by OpenVINO for the CPU (measured 1.3x PyTorch in fp32 and 1.5-2x in
  bf16 on one core; ``benchmarks/bench_speed.py``). Used by ``auto`` on CPUs where the package is installed.

Both run ``InferenceGraph``: uint8 NHWC patches in, one float array of maps out, so that the conversion and the
softmaxes run inside the engine instead of as separate NumPy passes.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.export import Dim

from pathoseg.errors import SettingsError
from pathoseg.models.precision import autocast, cpu_has_native_bf16, onednn_capped_below_bf16
from pathoseg.models.weights import check_int8_ir

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "openvino")
_OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
# Probabilities stored as float16 are clamped to its smallest normal number: converting values below it
# (subnormals) takes NumPy's slow path, measured 28x slower, over a second per region.
FLOAT16_TINY = 2.0**-14


class InferenceGraph(nn.Module):
    """(B, H, W, 3) uint8 -> (B, K, H, W) float maps: nucleus probability (1 - p(background)), [interior
    probability for a three-class NP head,] HV (2 channels), class probabilities (C channels)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.np_classes = network.np_classes

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 patches to (B, K, H, W) float maps."""
        rgb = patches.permute(0, 3, 1, 2).float().div(255).contiguous(memory_format=torch.channels_last)
        out = self.network(rgb)
        np_prob = out["np"].float().softmax(dim=1)
        maps = [1 - np_prob[:, :1]]
        if self.np_classes == 3:
            maps.append(np_prob[:, 1:2].clamp_min(FLOAT16_TINY))
        return torch.cat([*maps, out["hv"].float(), out["nc"].float().softmax(dim=1).clamp_min(FLOAT16_TINY)], dim=1)


def openvino_available() -> bool:
    """Whether OpenVINO is installed."""
    return importlib.util.find_spec("openvino") is not None


def choose_runtime(requested: str, device: torch.device) -> str:
    """``auto``: OpenVINO on the CPU when it is installed, PyTorch otherwise."""
    if requested not in RUNTIMES:
        raise SettingsError(f"runtime {requested!r}: choose one of {', '.join(RUNTIMES)}")
    if requested == "openvino" and device.type != "cpu":
        raise SettingsError(f"runtime openvino runs on the CPU, not on {device}")
    if requested == "openvino" and not openvino_available():
        raise SettingsError("runtime openvino: the openvino package is not installed (pip install openvino)")
    if requested == "auto":
        return "openvino" if device.type == "cpu" and openvino_available() else "torch"
    return requested


class TorchEngine:
    """The graph in PyTorch on ``device``."""

    def __init__(self, graph: InferenceGraph, device: torch.device, precision: str):
        self.graph = graph.to(device).eval()
        self.device, self.precision = device, precision

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), autocast(self.device, self.precision):
            return self.graph(torch.from_numpy(patches).to(self.device)).float().cpu().numpy()


def openvino_model(graph: InferenceGraph, batch_size: int, patch_px: int) -> Any:
    """The graph converted to an OpenVINO model for (batch_size, H, W, 3) uint8 input, H and W any multiple of 32
    (traced at ``patch_px``): an int8 version calibrated on small crops is reshaped to a run's patches."""
    import openvino as ov

    example = torch.zeros(batch_size, patch_px, patch_px, 3, dtype=torch.uint8)
    rows, cols = Dim("rows", min=1, max=256), Dim("cols", min=1, max=256)
    with warnings.catch_warnings():  # torch.export's own deprecation notices, printed to users' terminals
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.export.export(graph.eval(), (example,), dynamic_shapes=({1: 32 * rows, 2: 32 * cols},))
        return ov.convert_model(program)


class OpenVinoEngine:
    """The graph compiled by OpenVINO for the CPU, for batches of ``batch_size`` patches of ``patch_px``; in int8,
    the quantised IR ``int8_ir`` (made from the same weights by ``models.quantize``) instead.

    A shorter last batch is padded to the compiled shape (one static shape compiles to the fastest kernels).
    """

    def __init__(
        self, graph: InferenceGraph, precision: str, batch_size: int, patch_px: int, int8_ir: Path | None = None
    ):
        import openvino as ov

        if precision == "int8":
            if int8_ir is None:
                raise SettingsError("precision int8: this model has no int8 version")
            check_int8_ir(int8_ir)
            model = ov.Core().read_model(int8_ir)
        else:
            model = openvino_model(graph, batch_size, patch_px)
        model.reshape([batch_size, patch_px, patch_px, 3])  # static: the fastest kernels
        threads = torch.get_num_threads()
        # No pinning: several worker processes share the cores, and pinned threads would pile onto the same ones.
        # int8: the quantised operations run in int8 whatever the hint; the rest in fp32.
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "ENABLE_CPU_PINNING": False,
            "INFERENCE_PRECISION_HINT": _openvino_hint(precision),
        }
        self.compiled = ov.Core().compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.batch_size = batch_size
        log.info("OpenVINO engine: %d thread(s), %s", threads, precision)

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        n = len(patches)
        if n < self.batch_size:
            patches = np.concatenate([patches, np.zeros((self.batch_size - n, *patches.shape[1:]), patches.dtype)])
        # A copy: the request reuses its output buffer on the next call.
        return np.array(self.request.infer({0: np.ascontiguousarray(patches)})[0][:n])


def _openvino_hint(precision: str) -> str:
    """OpenVINO's precision hint. A 16-bit float request it cannot honour runs as f32, which is what OpenVINO does
    by itself on a CPU without those instructions; under an instruction-set cap (``ONEDNN_MAX_CPU_ISA``) on a CPU
    that has them it would instead fail to compile ('object is not initialized')."""
    unavailable = (precision == "bf16" and not cpu_has_native_bf16()) or (
        precision == "fp16" and onednn_capped_below_bf16()
    )
    if unavailable:
        log.warning("OpenVINO: no native %s here, it runs as fp32", precision)
        return "f32"
    return _OPENVINO_PRECISION[precision]


def build_engine(
    network: nn.Module,
    device: torch.device,
    precision: str,
    runtime: str,
    batch_size: int,
    patch_px: int,
    int8_ir: Path | None = None,
) -> TorchEngine | OpenVinoEngine:
    """The engine for a resolved ``runtime`` (see ``choose_runtime``) and precision."""
    graph = InferenceGraph(network)
    if runtime == "openvino":
        return OpenVinoEngine(graph, precision, batch_size, patch_px, int8_ir)
    return TorchEngine(graph, device, precision)

"""``pathoseg info SLIDE``: what the slide is and how much tissue it holds. ``pathoseg info --system``: what this
machine runs the model with, and how fast."""

from __future__ import annotations

import json
from typing import Any

import click
import torch

from pathoseg.cli.common import fail, friendly_errors
from pathoseg.config import load_config
from pathoseg.io.slide import open_slide
from pathoseg.models.precision import cpu_has_native_bf16, resolve_precision
from pathoseg.models.weights import load_model
from pathoseg.system import local_workers, model_mpx_per_second, runtimes_here, system_facts
from pathoseg.tiling.tissue import find_tissue


@click.command()
@click.argument("slide_path", type=click.Path(path_type=str), required=False)
@click.option("--mpp", type=float, help="Microns per level-0 pixel (for images without a pixel size).")
@click.option(
    "--system",
    is_flag=True,
    help="Instead of a slide: this machine's devices, what `auto` picks, and the model's throughput in "
    "each runtime and precision (measured, ~20 s).",
)
@click.option("--seconds", type=float, default=2.0, show_default=True, help="--system: seconds per measurement.")
@click.option("--model", help="--system: the model to measure (default: the configuration's).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@friendly_errors
def info(
    slide_path: str | None, mpp: float | None, system: bool, seconds: float, model: str | None, as_json: bool
) -> None:
    """Vendor, levels, dimensions, mpp, objective power, bounds and tissue fraction of SLIDE_PATH."""
    if system:
        show_system(seconds, as_json, model)
        return
    if slide_path is None:
        fail("give a SLIDE_PATH, or --system for this machine")
    slide = open_slide(slide_path, mpp)
    bounds = slide.bounds
    facts: dict[str, Any] = {
        "path": str(slide.path),
        "vendor": slide.vendor,
        "dimensions": list(slide.dimensions),
        "levels": [
            {"dimensions": list(d), "downsample": round(f, 4)}
            for d, f in zip(slide.level_dimensions, slide.level_downsamples)
        ],
        "mpp": slide.mpp,
        "mpp_source": slide.mpp_source,
        "objective_power": slide.objective_power,
        "bounds": {"x": bounds.x, "y": bounds.y, "width": bounds.width, "height": bounds.height},
    }
    if slide.mpp is not None:
        tissue, _ = find_tissue(slide, load_config())
        facts["tissue"] = {"fraction": round(tissue.fraction, 4), "area_mm2": round(tissue.area_mm2, 4)}
    if as_json:
        click.echo(json.dumps(facts, indent=2))
        return
    click.echo(
        f"{facts['path']}\n  vendor: {facts['vendor']}\n  dimensions: {bounds.width}x{bounds.height} "
        f"(level 0 {slide.dimensions[0]}x{slide.dimensions[1]})"
    )
    for i, level in enumerate(facts["levels"]):
        click.echo(f"  level {i}: {level['dimensions'][0]}x{level['dimensions'][1]} (downsample {level['downsample']})")
    mpp_text = f"{slide.mpp:.4f} µm/px ({slide.mpp_source})" if slide.mpp else "unknown (give --mpp)"
    click.echo(f"  mpp: {mpp_text}\n  objective power: {slide.objective_power or 'unknown'}")
    click.echo(f"  bounds: x={bounds.x} y={bounds.y} w={bounds.width} h={bounds.height}")
    if "tissue" in facts:
        click.echo(
            f"  tissue: {100 * facts['tissue']['fraction']:.1f}% of the slide, {facts['tissue']['area_mm2']:.3f} mm²"
        )


def show_system(seconds: float, as_json: bool, model: str | None = None) -> None:
    """Print the machine's facts and the model-only throughput per runtime and precision (``measure_system``)."""
    facts = measure_system(seconds, model)
    click.echo(json.dumps(facts, indent=2) if as_json else "\n".join(system_lines(facts)))


def measure_system(seconds: float, model: str | None = None) -> dict:
    """The machine's facts, what ``auto`` picks for the model, and the model-only throughput per runtime and
    precision, on one thread per core as a default run uses them (worker processes x 1 thread), and on each GPU in
    its auto precision."""
    facts = system_facts()
    config = load_config(overrides={"model": {"name": model}} if model else None)
    loaded = load_model(config.model.name)
    network = loaded.network
    torch.set_num_threads(config.cluster.threads_per_worker)
    device = torch.device("cpu")
    facts["model"] = {
        "name": config.model.name,
        "mpp": loaded.metadata.mpp,
        "default_workers": local_workers(config.cluster),
    }
    facts["cpu_auto"]["precision"] = resolve_precision(
        "auto", device, facts["cpu_auto"]["runtime"] == "openvino" and loaded.int8_ir is not None
    )
    facts["model_mpx_per_second_per_thread"] = {
        f"{runtime}/{precision}": round(
            model_mpx_per_second(network, device, precision, runtime, seconds, int8_ir=loaded.int8_ir), 3
        )
        for runtime in runtimes_here(device)
        for precision in ("fp32", "bf16", "int8")
        if measurable_here(runtime, precision, loaded.int8_ir is not None)
    }
    for index, gpu in enumerate(facts["cuda"]):
        gpu["model_mpx_per_second"] = round(
            model_mpx_per_second(network, torch.device("cuda", index), "auto", "torch", seconds), 3
        )
    return facts


def measurable_here(runtime: str, precision: str, has_int8: bool) -> bool:
    """Whether ``info --system`` measures ``runtime``/``precision`` on this CPU: int8 only in OpenVINO for a model
    that ships it; OpenVINO's bf16 only with native bfloat16 (elsewhere it runs fp32, measured on its own line)."""
    if precision == "int8":
        return runtime == "openvino" and has_int8
    return not (runtime == "openvino" and precision == "bf16" and not cpu_has_native_bf16())


def system_lines(facts: dict) -> list[str]:
    """``measure_system``'s facts as the text ``info --system`` prints."""
    auto, model = facts["cpu_auto"], facts["model"]
    mm2_per_mpx = model["mpp"] ** 2
    lines = [
        f"cpu: {facts['cpu']} ({facts['cores']} cores)",
        f"  PyTorch vector ISA: {facts['cpu_capability']}, "
        f"native bfloat16: {'yes' if facts['cpu_native_bf16'] else 'no'}",
        f"  torch {facts['torch']}, openvino {facts['openvino'] or 'not installed'}",
        f"  auto picks: runtime {auto['runtime']}, precision {auto['precision']}",
    ]
    lines += [
        f"cuda: {gpu['name']} (compute capability {gpu['capability']}), auto precision "
        f"{gpu['auto_precision']}, model only {gpu['model_mpx_per_second']:.3f} Mpx/s, "
        f"{gpu['model_mpx_per_second'] * mm2_per_mpx:.4f} mm²/s (8 patches per "
        f"pass; a run reaches a fraction of it, set by the worker processes' post-processing)"
        for gpu in facts["cuda"]
    ]
    lines.append(
        f"model {model['name']} at {model['mpp']} µm/px, one thread, model only (Mpx/s at its mpp, mm²/s "
        f"of tissue; a default run has {model['default_workers']} worker processes here):"
    )
    speeds = facts["model_mpx_per_second_per_thread"]
    best = max(speeds.values())
    for key, value in speeds.items():
        marker = "  <- auto" if key == f"{auto['runtime']}/{auto['precision']}" else ""
        lines.append(
            f"  {key:<16} {value:7.3f} Mpx/s  {value * mm2_per_mpx:.4f} mm²/s  ({value / best:.2f}x the "
            f"fastest){marker}"
        )
    return lines

"""End-to-end throughput and peak memory of `segment` on synthetic slides, per model and inference setting, side by
side.

Prints the CPU, then per model, setting (runtime/precision; ``auto`` is what a default run picks) and slide size:
tissue mm² per second and tissue megapixels per second at 0.25 µm/px (40x) equivalent (end to end, tiling and
outputs included; comparable across models of different resolutions), the model-only throughput of that setting in
the same run (the baseline, at the model's own mpp), their ratio, where the region tasks' time went, and peak RSS of
the client and of the worker processes. Peak RSS should stay flat as the slide grows. Last, each model's speed as a
ratio to the last model listed (the baseline model).

    python benchmarks/bench_segment.py --sizes 20000 --models pathoseg-fast pathoseg-light
    python benchmarks/bench_segment.py --sizes 12000 --workers 2 8 14 --settings auto/auto   # a GPU machine
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from pathoseg.config import load_config
from pathoseg.pipeline import segment_slide
from pathoseg.synthetic import write_synthetic_slide
from pathoseg.system import cpu_capability, local_workers

# Run by a fresh interpreter: a multiprocessing "spawn" child that imports torch while it starts (as it does when it
# re-imports this script) ran OpenVINO bf16 5x slower here (0.67 vs 3.6 Mpx/s), which made every ratio look better.
# Dask's worker processes run at full speed (measured in-worker: 2.34 Mpx/s per thread, as in-process).
MODEL_ONLY = """
import json, sys
import torch
from pathoseg.models.infer import resolve_device
from pathoseg.models.weights import load_model
from pathoseg.system import model_mpx_per_second
settings = json.loads(sys.argv[1])
torch.set_num_threads(settings["threads"])
loaded = load_model(settings["name"])
print(model_mpx_per_second(loaded.network, resolve_device(settings["device"]), settings["precision"],
                           settings["runtime"], settings["seconds"], int8_ir=loaded.int8_ir))
"""


def model_only_mpx_per_s(config, seconds: float) -> float:
    """Baseline: the predictor alone, with as many torch threads as the cluster has in all, in its own process (so
    that the client's peak RSS below is the pipeline's alone)."""
    model = config.model
    settings = {
        "threads": config.cluster.threads_per_worker * local_workers(config.cluster),
        "name": model.name,
        "device": model.device,
        "precision": model.precision,
        "runtime": model.runtime,
        "seconds": seconds,
    }
    run = subprocess.run(
        [sys.executable, "-c", MODEL_ONLY, json.dumps(settings)], capture_output=True, text=True, check=True
    )
    return float(run.stdout.split()[-1])


def device_description() -> str:
    """The CPU's capability, and the GPU a default run would use, if any."""
    gpu = f"; GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "; no GPU"
    return f"CPU: {cpu_capability()}{gpu}; torch {torch.__version__}"


def run_setting(
    slides: dict[int, Path],
    workdir: Path,
    model: str,
    runtime: str,
    precision: str,
    cluster: dict,
    baseline_seconds: float,
) -> dict[int, dict]:
    """Segment every slide with one model, inference setting and cluster shape; print one line per slide and
    return each slide's ``summary["run"]``."""
    config = load_config(
        overrides={"cluster": cluster, "model": {"name": model, "runtime": runtime, "precision": precision}}
    )
    threads = config.cluster.threads_per_worker
    baseline = model_only_mpx_per_s(config, baseline_seconds)
    runs = {}
    for side, slide in slides.items():
        out_dir = workdir / f"out-{side}-{model}-{runtime}-{precision}-{config.cluster.workers}"
        summary = segment_slide(slide, out_dir, config)
        run = runs[side] = summary["run"]
        tasks = run["task_seconds"]
        shares = ", ".join(f"{k} {100 * v / sum(tasks.values()):.0f}%" for k, v in tasks.items())
        phases = ", ".join(f"{k} {v:.0f} s" for k, v in run["client_seconds"].items())
        print(
            f"[{model} {runtime}/{precision} -> {run['device']} {run['runtime']}/{run['precision']}, "
            f"{run['workers']} worker(s) x {threads} thread(s)] slide {side}x{side} px @0.25 µm: tissue "
            f"{summary['tissue']['area_mm2']:.2f} mm², {summary['nuclei']} nuclei, {run['seconds']:.0f} s, "
            f"end-to-end {run['tissue_mm2_per_second']:.4f} mm²/s = {run['mpx_per_second_at_40x']:.3f} Mpx/s at "
            f"0.25 µm/px ({run['mpx_per_second'] / baseline:.2f}x model-only {baseline:.3f} Mpx/s at the model's "
            f"mpp); phases: {phases}; region tasks: {shares}; peak RSS client {run['peak_rss_mb_client']:.0f} MB, "
            f"largest worker {run['peak_rss_mb_worker']:.0f} MB",
            flush=True,
        )
    return runs


def print_model_ratios(results: dict[tuple, dict[int, dict]], models: list[str]) -> None:
    """Each model's end-to-end mm²/s as a ratio to the last model's, per setting, workers and slide."""
    baseline_model = models[-1]
    for (model, setting, workers), runs in results.items():
        baseline = results.get((baseline_model, setting, workers))
        if model == baseline_model or baseline is None:
            continue
        for side, run in runs.items():
            ratio = run["tissue_mm2_per_second"] / baseline[side]["tissue_mm2_per_second"]
            print(
                f"{model} / {baseline_model} [{setting}, slide {side}]: {run['tissue_mm2_per_second']:.4f} / "
                f"{baseline[side]['tissue_mm2_per_second']:.4f} mm²/s = {ratio:.2f}x "
                f"({run['precision']} vs {baseline[side]['precision']})",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 20000], help="square slide sides (px)")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[None],
        help="worker process counts to compare (default: the config's)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: the config's)")
    parser.add_argument(
        "--models",
        nargs="+",
        default=["pathoseg-fast", "pathoseg-light"],
        help="models to compare; the last is the baseline of the ratios",
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["auto/auto", "openvino/fp32"],
        help="runtime/precision pairs (auto/auto: what a default run picks; torch/bf16 where the CPU "
        "has native bfloat16)",
    )
    parser.add_argument("--baseline-seconds", type=float, default=20.0, help="how long the model-only run lasts")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    print(device_description(), flush=True)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        slides = {side: write_synthetic_slide(Path(workdir) / f"bench-{side}.svs", side, side) for side in args.sizes}
        results = {}
        for model in args.models:
            for setting in args.settings:
                runtime, precision = setting.split("/")
                for workers in args.workers:
                    cluster = {
                        key: value
                        for key, value in (("workers", workers), ("threads_per_worker", args.threads))
                        if value is not None
                    }
                    results[model, setting, workers] = run_setting(
                        slides, Path(workdir), model, runtime, precision, cluster, args.baseline_seconds
                    )
        print_model_ratios(results, args.models)


if __name__ == "__main__":
    main()

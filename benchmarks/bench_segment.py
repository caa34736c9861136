"""End-to-end throughput and peak memory of `segment` on synthetic slides, per inference setting, side by side.

Prints the CPU, then per setting (runtime/precision; ``auto`` is what a default run picks) and slide size: tissue
megapixels at the model's resolution per second (end to end, tiling and outputs included), the model-only
throughput of that setting in the same run (the baseline), their ratio, where the region tasks' time went, and peak
RSS of the client and of the worker processes. Peak RSS should stay flat as the slide grows.

    python benchmarks/bench_segment.py --sizes 20000 --settings auto/auto openvino/fp32 torch/bf16
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
print(model_mpx_per_second(load_model(settings["name"]).network, resolve_device(settings["device"]),
                           settings["precision"], settings["runtime"], settings["seconds"]))
"""


def model_only_mpx_per_s(config, seconds: float) -> float:
    """Baseline: the predictor alone, with as many torch threads as the cluster has in all, in its own process (so
    that the client's peak RSS below is the pipeline's alone)."""
    model = config.model
    settings = {"threads": config.cluster.threads_per_worker * local_workers(config.cluster), "name": model.name,
                "device": model.device, "precision": model.precision, "runtime": model.runtime, "seconds": seconds}
    run = subprocess.run([sys.executable, "-c", MODEL_ONLY, json.dumps(settings)], capture_output=True, text=True,
                         check=True)
    return float(run.stdout.split()[-1])


def device_description() -> str:
    """The CPU's capability, and the GPU a default run would use, if any."""
    gpu = f"; GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "; no GPU"
    return f"CPU: {cpu_capability()}{gpu}; torch {torch.__version__}"


def run_setting(slides: dict[int, Path], workdir: Path, runtime: str, precision: str, cluster: dict,
                baseline_seconds: float) -> None:
    """Segment every slide with one inference setting and cluster shape; print one line per slide."""
    config = load_config(overrides={"cluster": cluster, "model": {"runtime": runtime, "precision": precision}})
    threads = config.cluster.threads_per_worker
    baseline = model_only_mpx_per_s(config, baseline_seconds)
    for side, slide in slides.items():
        out_dir = workdir / f"out-{side}-{runtime}-{precision}-{config.cluster.workers}"
        summary = segment_slide(slide, out_dir, config)
        run = summary["run"]
        tasks = run["task_seconds"]
        shares = ", ".join(f"{k} {100 * v / sum(tasks.values()):.0f}%" for k, v in tasks.items())
        phases = ", ".join(f"{k} {v:.0f} s" for k, v in run["client_seconds"].items())
        print(f"[{runtime}/{precision} -> {run['device']} {run['runtime']}/{run['precision']}, "
              f"{run['workers']} worker(s) x {threads} thread(s)] slide {side}x{side} px @0.25 µm: tissue "
              f"{run['tissue_mpx_at_model_mpp']:.1f} Mpx, {summary['nuclei']} nuclei, {run['seconds']:.0f} s, "
              f"end-to-end {run['mpx_per_second']:.3f} Mpx/s ({run['mpx_per_second'] / baseline:.2f}x "
              f"model-only {baseline:.3f}); phases: {phases}; region tasks: {shares}; peak RSS "
              f"client {run['peak_rss_mb_client']:.0f} MB, largest worker {run['peak_rss_mb_worker']:.0f} MB",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 20000], help="square slide sides (px)")
    parser.add_argument("--workers", type=int, nargs="+", default=[None],
                        help="worker process counts to compare (default: the config's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: the config's)")
    parser.add_argument("--settings", nargs="+", default=["auto/auto", "openvino/fp32", "torch/bf16"],
                        help="runtime/precision pairs (auto/auto: what a default run picks)")
    parser.add_argument("--baseline-seconds", type=float, default=20.0, help="how long the model-only run lasts")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    print(device_description(), flush=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        slides = {side: write_synthetic_slide(Path(workdir) / f"bench-{side}.svs", side, side) for side in args.sizes}
        for setting in args.settings:
            runtime, precision = setting.split("/")
            for workers in args.workers:
                cluster = {key: value for key, value in (("workers", workers), ("threads_per_worker", args.threads))
                           if value is not None}
                run_setting(slides, Path(workdir), runtime, precision, cluster, args.baseline_seconds)


if __name__ == "__main__":
    main()

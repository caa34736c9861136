"""End-to-end throughput and peak memory of `segment` on synthetic slides of growing size.

Prints, per slide size: tissue megapixels at the model's resolution per second (end to end, tiling included), the
model-only throughput on the same machine in the same run (the baseline), their ratio, and peak RSS of the client
and of the worker processes. Peak RSS should stay flat as the slide grows.

    python benchmarks/bench_segment.py --sizes 10000 20000
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
import time
from pathlib import Path

import numpy as np
import torch

from pathoseg.config import load_config
from pathoseg.distributed import get_predictor
from pathoseg.pipeline import segment_slide
from pathoseg.synthetic import write_synthetic_slide


def model_only_mpx_per_s(config, seconds: float = 20.0) -> float:
    """Baseline: the predictor alone on 2048 x 2048 random-content windows, as a worker runs it."""
    torch.set_num_threads(config.cluster.threads_per_worker * config.cluster.workers)
    predictor = get_predictor(config.model)
    rgb = np.random.default_rng(0).integers(0, 255, (2048, 2048, 3), dtype=np.uint8)
    predictor.predict(rgb[:512, :512])
    done, started = 0, time.time()
    while time.time() - started < seconds:
        predictor.predict(rgb)
        done += rgb.shape[0] * rgb.shape[1]
    return done / (time.time() - started) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 20000], help="square slide sides (px)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: the config's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: the config's)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    cluster = {key: value for key, value in (("workers", args.workers), ("threads_per_worker", args.threads))
               if value is not None}
    config = load_config(overrides={"cluster": cluster})
    workers, threads = config.cluster.workers, config.cluster.threads_per_worker
    # In a child process, so that the client's peak RSS below is the pipeline's alone.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        baseline = pool.submit(model_only_mpx_per_s, config).result()
    print(f"baseline model-only: {baseline:.3f} Mpx/s (one process, {workers * threads} torch threads); slides run on "
          f"{workers} worker(s) x {threads} thread(s), regions of {config.tiling.region_px} px")
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        for side in args.sizes:
            slide = write_synthetic_slide(Path(workdir) / f"bench-{side}.svs", side, side)
            summary = segment_slide(slide, Path(workdir) / f"out-{side}", config)
            run = summary["run"]
            print(f"slide {side}x{side} px @0.25 µm: tissue {run['tissue_mpx_at_model_mpp']:.1f} Mpx, "
                  f"{summary['nuclei']} nuclei, {run['seconds']:.0f} s, end-to-end {run['mpx_per_second']:.3f} "
                  f"Mpx/s ({run['mpx_per_second'] / baseline:.2f}x model-only), peak RSS client "
                  f"{run['peak_rss_mb_client']:.0f} MB, largest worker {run['peak_rss_mb_worker']:.0f} MB "
                  f"(all processes <= {run['peak_rss_mb_client'] + workers * run['peak_rss_mb_worker']:.0f} MB)",
                  flush=True)


if __name__ == "__main__":
    main()

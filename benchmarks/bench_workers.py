"""Throughput for 1 vs 2 Dask worker processes, and the scheduling overhead per region task.

    python benchmarks/bench_workers.py --side 8000

Prints Mpx/s of the tiling + region tasks for each layout (same total torch threads), the mean region task time
(tiling included), and the round-trip
cost of a no-op task on the same cluster; the ratio is the share of a task's time spent on scheduling.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from distributed import Client, LocalCluster

from pathoseg.config import load_config
from pathoseg.distributed import open_runner
from pathoseg.pipeline import run_regions
from pathoseg.plan import plan_slide
from pathoseg.synthetic import write_synthetic_slide
from pathoseg.system import cpu_capability


def noop(x):
    return x


def per_task_overhead_s(workers: int, n_tasks: int = 200) -> float:
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.gather(client.map(noop, range(10), pure=False))
        started = time.time()
        client.gather(client.map(noop, range(n_tasks), pure=False))
        return (time.time() - started) * workers / n_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=8000)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    print(f"CPU: {cpu_capability()}")
    with tempfile.TemporaryDirectory() as workdir:
        slide = write_synthetic_slide(Path(workdir) / "bench.svs", args.side, args.side)
        for workers in (1, 2):
            threads = max(1, args.cores // workers)
            config = load_config(overrides={"cluster": {"workers": workers, "threads_per_worker": threads}})
            plan = plan_slide(slide, Path(workdir) / f"out-{workers}", config)
            started = time.time()
            with open_runner(config.cluster, config.model, len(plan.regions)) as runner:
                computed = run_regions(plan, config, lambda *_: None, runner)["regions_computed"]
            elapsed = time.time() - started
            tissue_mpx = plan.tissue.area_mm2 / plan.metadata.mpp**2
            task_s = elapsed * workers / max(1, computed)
            overhead = per_task_overhead_s(workers)
            print(
                f"{workers} worker(s) x {threads} threads: {tissue_mpx / elapsed:.3f} tissue Mpx/s in tiling + "
                f"region tasks, {computed} regions, ~{task_s:.1f} s per region task, scheduling overhead "
                f"{overhead * 1000:.1f} ms/task = {100 * overhead / task_s:.2f}% of a task",
                flush=True,
            )


if __name__ == "__main__":
    main()

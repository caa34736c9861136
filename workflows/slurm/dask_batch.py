"""Run `pathoseg batch` on a SLURM cluster of Dask workers started by dask-jobqueue.

Each SLURM job is one Dask worker with one GPU (declared to Dask as the resource GPU=1, so region tasks never share a
GPU). The client runs here (on the login or a small head node) and writes the outputs to a shared filesystem.

    python workflows/slurm/dask_batch.py /archive results/ --jobs 4 --partition gpu
    python workflows/slurm/dask_batch.py /archive results/ --jobs 2 --gpus-per-job 0 --cores 2 -- -c my.yaml
    python workflows/slurm/dask_batch.py /archive results/ --dry-run      # print the worker job script only

Arguments after ``--`` go to ``pathoseg batch``. The archive and results folders must be on a filesystem the
compute nodes share, under the same path.
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def job_options(args: argparse.Namespace) -> dict:
    """SLURMCluster / SLURMJob keyword arguments: one worker process per job, GPUs declared to Dask."""
    return dict(
        queue=args.partition,
        account=args.account,
        cores=args.cores,
        processes=1,
        memory=args.memory,
        walltime=args.walltime,
        job_extra_directives=[f"--gres=gpu:{args.gpus_per_job}"] if args.gpus_per_job else [],
        worker_extra_args=["--resources", f"GPU={args.gpus_per_job}"] if args.gpus_per_job else [],
        job_script_prologue=[f"source {args.venv}/bin/activate"] if args.venv else [],
        log_directory=args.log_dir,
        interface=args.interface,
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive")
    parser.add_argument("out")
    parser.add_argument("--jobs", type=int, default=2, help="SLURM jobs = Dask workers")
    parser.add_argument("--partition", default="gpu")
    parser.add_argument("--account", default=None)
    parser.add_argument("--cores", type=int, default=8)
    parser.add_argument("--memory", default="32GB")
    parser.add_argument("--walltime", default="08:00:00")
    parser.add_argument("--gpus-per-job", type=int, default=1, help="0 for CPU-only workers")
    parser.add_argument("--venv", default=None, help="virtual environment with pathoseg, activated in each job")
    parser.add_argument("--log-dir", default="slurm-logs")
    parser.add_argument(
        "--interface",
        default=None,
        help="network interface the scheduler and workers listen on (e.g. ib0; default: Dask's)",
    )
    parser.add_argument(
        "--wait-minutes",
        type=float,
        default=60.0,
        help="how long to wait for the first worker job to start before giving up",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the worker job script and exit")
    args, args.batch_args = parser.parse_known_args(argv)  # the rest goes to pathoseg batch
    args.batch_args = [arg for arg in args.batch_args if arg != "--"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from dask_jobqueue import SLURMCluster
    from dask_jobqueue.slurm import SLURMJob

    if args.dry_run:
        print(SLURMJob(scheduler="tcp://SCHEDULER:8786", name="pathoseg-worker", **job_options(args)).job_script())
        return 0
    from distributed import Client

    cluster = SLURMCluster(**job_options(args))
    cluster.scale(jobs=args.jobs)
    device = ["--device", "cuda"] if args.gpus_per_job else ["--device", "cpu"]
    command = [
        "pathoseg",
        "batch",
        args.archive,
        "-o",
        args.out,
        "--scheduler",
        cluster.scheduler_address,
        *device,
        *args.batch_args,
    ]
    try:
        with Client(cluster) as client:  # queued jobs may take a while: pathoseg itself waits only minutes
            client.wait_for_workers(1, timeout=args.wait_minutes * 60)
        return subprocess.call(command)
    except TimeoutError:
        print(
            f"error: no SLURM worker job started within {args.wait_minutes:g} minutes (squeue shows why)",
            file=sys.stderr,
        )
        return 2
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())

"""Real clusters for the tests, started by their own tools on this machine (loopback only):

* ``dask_cli_cluster``: ``dask scheduler`` and ``dask worker`` processes, each in its own working directory;
* ``slurm_cluster``: munged, slurmctld and slurmd (Debian's slurm-wlm) as a one-node SLURM cluster.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from distributed import Client

from pathoseg.batch import find_slides, safe_name
from pathoseg.io.regions import finished_regions

BIN = Path(sys.executable).parent


# pathoseg-fast: what the cluster, SLURM and fault tests check (same outputs whatever runs them) does not depend on
# the model, and it runs in a quarter of pathoseg-light's inference (the suite's slowest tests are these).
SMALL_CONFIG = (
    "model: {name: pathoseg-fast}\n"
    "tiling: {region_px: 512, margin_px: 96}\n"
    "cluster: {threads_per_worker: 1, connect_timeout_s: 5, worker_timeout_s: 30}\n"
)


def client_folder(tmp_path: Path) -> Path:
    """A client's working directory holding the small config; slides and results are given relative to it."""
    folder = tmp_path / "client"
    folder.mkdir()
    (folder / "small.yaml").write_text(SMALL_CONFIG)
    return folder


def geojson(results: Path, name: str) -> bytes:
    return gzip.decompress((results / name / "nuclei.geojson.gz").read_bytes())


def assert_same_outputs(archive: Path, reference: Path, results: Path) -> None:
    """Every slide's GeoJSON under ``results`` equals the reference run's, byte for byte."""
    for slide in find_slides(archive):
        name = safe_name(slide, archive)
        assert geojson(results, name) == geojson(reference, name), name


def first_slide_regions(results: Path, archive: Path) -> int:
    """Regions of the archive's first slide already saved under ``results``."""
    name = safe_name(sorted(find_slides(archive))[0], archive)
    return len(finished_regions(results / name / "store.zarr" / "nuclei"))


def wait_for(condition, timeout_s: float = 120, what: str = "condition") -> None:
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            raise TimeoutError(f"{what} not reached in {timeout_s} s")
        time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DaskCluster:
    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)

    def worker_pids(self) -> dict[str, int]:
        """Worker address -> pid of the worker process (the nanny's child)."""
        with Client(self.address, timeout="10s") as client:
            return client.run(os.getpid)


def start_worker(
    address: str,
    workdir: Path,
    name: str,
    resources: str | None = None,
    command: list[str] | None = None,
    env: dict | None = None,
) -> subprocess.Popen:
    """A ``dask worker`` (1 process x 1 thread) whose working and local directories are its own."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = [
        *(command or [str(BIN / "dask"), "worker"]),
        address,
        "--nthreads",
        "1",
        "--nworkers",
        "1",
        "--no-dashboard",
        "--local-directory",
        str(workdir),
        "--name",
        name,
    ]
    if resources:
        args += ["--resources", resources]
    return subprocess.Popen(
        args, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=open(workdir / "worker.log", "w")
    )


@contextmanager
def dask_cli_cluster(workdir: Path, worker_resources: tuple[str | None, ...] = (None, None)) -> Iterator[DaskCluster]:
    """``dask scheduler`` plus one ``dask worker`` per entry of ``worker_resources`` (e.g. "GPU=1")."""
    scheduler_dir = workdir / "scheduler"
    scheduler_dir.mkdir(parents=True)
    scheduler_file = scheduler_dir / "scheduler.json"
    scheduler = subprocess.Popen(
        [
            str(BIN / "dask"),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
        ],
        cwd=scheduler_dir,
        stdout=subprocess.DEVNULL,
        stderr=open(scheduler_dir / "scheduler.log", "w"),
    )
    cluster = DaskCluster("", scheduler)
    try:
        wait_for(scheduler_file.is_file, 60, "scheduler file")
        wait_for(lambda: "address" in json.loads(scheduler_file.read_text() or "{}"), 30, "scheduler address")
        cluster.address = json.loads(scheduler_file.read_text())["address"]
        for i, resources in enumerate(worker_resources):
            cluster.workers.append(start_worker(cluster.address, workdir / f"worker{i}", f"w{i}", resources))
        if worker_resources:
            with Client(cluster.address, timeout="30s") as client:
                client.wait_for_workers(len(worker_resources), timeout=120)
        yield cluster
    finally:
        for process in [*cluster.workers, scheduler]:
            process.terminate()
        for process in [*cluster.workers, scheduler]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


SLURM_CONF = """\
ClusterName=pathoseg-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _ensure_munged() -> None:
    """Start munged as the munge user unless it already answers."""
    if subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
        return
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", shutil.which("munged")], check=True, timeout=30)
    wait_for(lambda: subprocess.run(["munge", "-n"], capture_output=True).returncode == 0, 30, "munged")


@contextmanager
def slurm_cluster(root: Path) -> Iterator[dict]:
    """A one-node SLURM cluster (partition ``debug``, this machine's cores); yields the environment that points
    sbatch, squeue and sinfo at it (SLURM_CONF)."""
    missing = [tool for tool in ("slurmctld", "slurmd", "sbatch", "munged") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing; .ci/run installs slurm-wlm and munge)")
    if os.geteuid() != 0:
        pytest.skip("starting slurmd needs root")
    _ensure_munged()
    for folder in ("state", "spool"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    conf = root / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            host=socket.gethostname().split(".")[0],
            root=root,
            cpus=os.cpu_count(),
            memory_mb=12000,
            ctld_port=free_port(),
            slurmd_port=free_port(),
        )
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    daemons = [
        subprocess.Popen(
            [shutil.which(daemon), "-D"], env=env, stdout=subprocess.DEVNULL, stderr=open(root / f"{daemon}.out", "w")
        )
        for daemon in ("slurmctld", "slurmd")
    ]
    try:
        wait_for(
            lambda: (
                "idle" in subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout
            ),
            60,
            "an idle SLURM node",
        )
        yield env
    finally:
        for daemon in daemons:
            daemon.terminate()
        for daemon in daemons:
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()


def wait_for_slurm_jobs(env: dict, job_id: str, timeout_s: float = 600) -> None:
    """Until no job (or array element) of ``job_id`` is queued or running."""
    wait_for(
        lambda: (
            not subprocess.run(["squeue", "-h", "-j", job_id], env=env, capture_output=True, text=True).stdout.strip()
        ),
        timeout_s,
        f"SLURM job {job_id} to finish",
    )

"""Region tasks on a real Dask LocalCluster give exactly what the in-process run gives."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import shared

from pathoseg.config import ConfigError, load_config
from pathoseg.distributed import open_runner
from pathoseg.pipeline import segment_slide
from pathoseg.system import local_workers, usable_cores
from pathoseg.tiling import tiler


def config_for(scheduler: str, workers: int = 1):
    return load_config(
        overrides={
            "cluster": {"scheduler": scheduler, "workers": workers, "threads_per_worker": 1},
            "tiling": {"region_px": 1024},
            "model": {"name": "pathoseg-fast"},
        }
    )


@pytest.mark.timeout(600)
def test_local_cluster_of_two_processes_matches_in_process(svs_slide, tmp_path):
    in_process = segment_slide(svs_slide, tmp_path / "a", config_for("inprocess"))
    cluster = segment_slide(svs_slide, tmp_path / "b", config_for("local", workers=2))
    assert cluster["grid"]["regions"] >= 4
    assert cluster["nuclei"] == in_process["nuclei"] > 100
    assert cluster["counts"] == in_process["counts"]
    a = gzip.decompress((tmp_path / "a" / "nuclei.geojson.gz").read_bytes())
    b = gzip.decompress((tmp_path / "b" / "nuclei.geojson.gz").read_bytes())
    assert a == b
    assert cluster["run"]["peak_rss_mb_worker"] > 0
    assert (in_process["run"]["workers"], cluster["run"]["workers"]) == (1, 2)


def test_auto_workers_use_the_cores_this_process_is_given():
    """A SLURM job or `taskset` gives the process fewer cores than the machine has: ``auto`` counts those."""
    probe = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from pathoseg.config import load_config; from pathoseg.system import local_workers; "
        "print(local_workers(load_config().cluster))"
    )
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "1\n"


def test_worker_counts():
    cores = usable_cores()
    assert 1 <= local_workers(load_config().cluster) <= cores
    assert local_workers(load_config(overrides={"cluster": {"workers": cores + 3}}).cluster) == cores + 3
    assert local_workers(load_config(overrides={"cluster": {"threads_per_worker": cores}}).cluster) == 1
    assert local_workers(load_config().cluster, tasks=1) == 1  # one region: no idle workers to start
    assert local_workers(load_config().cluster, gpu_memory_bytes=4 * 2**30) == 1  # a small shared GPU
    assert local_workers(load_config(overrides={"cluster": {"workers": 3}}).cluster, tasks=1) == 3
    with pytest.raises(ConfigError, match="cluster.workers: 0 is not"):
        load_config(overrides={"cluster": {"workers": 0}})


def memory_cgroup_of_this_process() -> tuple[Path, str] | None:
    """This process's cgroup folder with a memory limit (v1 memory controller, else v2) and its limit file's name."""
    for line in Path("/proc/self/cgroup").read_text().splitlines() if Path("/proc/self/cgroup").is_file() else []:
        _, controllers, group = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / group.lstrip("/"), "memory.limit_in_bytes"
        if controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").is_file():
            return Path("/sys/fs/cgroup") / group.lstrip("/"), "memory.max"
    return None


def test_auto_workers_respect_a_cgroup_memory_limit():
    """A SLURM job or container capped at 3 GiB gets one worker, whatever the machine has free (a real cgroup)."""
    found = memory_cgroup_of_this_process()
    if found is None:
        pytest.skip("no memory cgroup")
    group, limit_name = found
    child = group / f"pathoseg-test-{os.getpid()}"
    try:
        child.mkdir()
        (child / limit_name).write_text(str(3 * 2**30))
    except OSError as error:
        if child.is_dir():
            child.rmdir()
        pytest.skip(f"cannot make a cgroup here: {error}")
    probe = (
        "import os, sys; open(sys.argv[1], 'w').write(str(os.getpid())); "
        "from pathoseg.config import load_config; from pathoseg.system import cgroup_memory_headroom_bytes, "
        "local_workers; print(cgroup_memory_headroom_bytes(), local_workers(load_config().cluster))"
    )
    try:
        run = subprocess.run([sys.executable, "-c", probe, str(child / "cgroup.procs")], capture_output=True, text=True)
    finally:
        child.rmdir()
    if "PermissionError" in run.stderr or "OSError" in run.stderr:
        pytest.skip("cannot move a process into the cgroup here")
    headroom, workers = run.stdout.split()
    assert 2 * 2**30 < int(headroom) <= 3 * 2**30
    assert workers == "1"


def test_cgroup_v1_memory_limit_of_a_slurm_job(tmp_path):
    """Older SLURM nodes cap a job's memory with cgroup v1 (memory.limit_in_bytes / memory.usage_in_bytes), whose
    "no limit" is a huge number; the tightest level counts. Laid out as such a node's /proc and /sys show it."""
    from pathoseg.system import cgroup_memory_headroom_bytes

    proc_cgroup = tmp_path / "cgroup"
    proc_cgroup.write_text("12:cpu,cpuacct:/slurm/uid_0/job_5\n7:memory:/slurm/uid_0/job_5/step_0\n0::/\n")
    memory = tmp_path / "sys" / "memory"
    for level, limit, usage in (
        ("", 2**63 - 4096, 50 * 2**30),
        ("slurm", 2**63 - 4096, 20 * 2**30),
        ("slurm/uid_0/job_5", 6 * 2**30, 2**30),
        ("slurm/uid_0/job_5/step_0", 2**63 - 4096, 2**30),
    ):
        (memory / level).mkdir(parents=True, exist_ok=True)
        (memory / level / "memory.limit_in_bytes").write_text(f"{limit}\n")
        (memory / level / "memory.usage_in_bytes").write_text(f"{usage}\n")
    assert cgroup_memory_headroom_bytes(proc_cgroup, tmp_path / "sys") == 5 * 2**30
    (memory / "slurm/uid_0/job_5" / "memory.limit_in_bytes").write_text(f"{2**63 - 4096}\n")
    assert cgroup_memory_headroom_bytes(proc_cgroup, tmp_path / "sys") is None


def test_workers_option_takes_a_number_or_auto():
    import click
    from click.testing import CliRunner

    from pathoseg.cli import main
    from pathoseg.cli.segment import WORKERS, config_from_options

    assert WORKERS.convert("auto", None, None) == "auto" and WORKERS.convert("3", None, None) == 3
    with pytest.raises(click.BadParameter, match="'0' is not a positive whole number or auto"):
        WORKERS.convert("0", None, None)
    assert config_from_options(workers="auto").cluster.workers == "auto"
    result = CliRunner().invoke(main, ["segment", "slide.svs", "--workers", "many"])
    assert result.exit_code == 2 and "'many' is not a positive whole number or auto" in result.output


@pytest.mark.timeout(600)
def test_a_plain_image_is_tiled_by_the_client_not_by_every_worker(tmp_path):
    """A PNG is decoded whole by any process that reads it: the client, which holds it already, tiles it, so the
    workers never open it (on a many-core host each would hold all of it); the nuclei are the in-process run's."""
    image = shared("examples/he-tcga-tile.png")
    config = config_for("local", workers=2)
    with open_runner(config.cluster, config.model, 4) as runner:
        summary = segment_slide(image, tmp_path / "cluster", config, mpp=0.25, runner=runner)
        opened = runner.client.run(lambda: tiler._open_cached.cache_info().currsize)
    assert len(opened) == 2 and set(opened.values()) == {0}
    in_process = segment_slide(image, tmp_path / "in", config_for("inprocess"), mpp=0.25)
    assert summary["nuclei"] == in_process["nuclei"] > 100
    assert gzip.decompress((tmp_path / "cluster" / "nuclei.geojson.gz").read_bytes()) == gzip.decompress(
        (tmp_path / "in" / "nuclei.geojson.gz").read_bytes()
    )


def test_peak_rss_of_a_started_process_is_its_own():
    """A process started by one that holds a lot reports its own peak (getrusage's ru_maxrss would report the
    starter's: it survives fork and exec)."""
    held = np.ones(2**29 // 8)  # 512 MiB, touched
    code = "from pathoseg.distributed import peak_rss_bytes; print(peak_rss_bytes())"
    child = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert child < 400 * 2**20 < held.nbytes


PAGE_FAULTS_OF_WINDOW_ARRAYS = """
import resource, sys
import numpy as np
from pathoseg.system import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
np.ones((3328, 3328), np.float64).sum()  # the heap, once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    np.ones((3328, 3328), np.float64).sum()  # a window-sized array (89 MB), allocated and freed
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_region_processes_reuse_freed_window_arrays():
    """With retain_freed_memory (which the workers and in-process runs call), allocating a window-sized array again
    reuses the freed one instead of page-faulting 89 MB from the kernel each time (as under Dask's trim setting)."""
    faults = {
        mode: int(
            subprocess.run(
                [sys.executable, "-c", PAGE_FAULTS_OF_WINDOW_ARRAYS, mode],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"},
            ).stdout
        )
        for mode in ("default", "retain")
    }
    huge_pages_per_array = 3328 * 3328 * 8 // 2**21  # the fewest faults an array costs (2 MB pages, numpy's madvise)
    assert faults["default"] >= 10 * huge_pages_per_array and faults["retain"] < faults["default"] / 20

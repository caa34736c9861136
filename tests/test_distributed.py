"""Region tasks on a real Dask LocalCluster give exactly what the in-process run gives."""

from __future__ import annotations

import gzip
import subprocess
import sys

import pytest

from pathoseg.config import ConfigError, load_config
from pathoseg.pipeline import segment_slide
from pathoseg.system import local_workers, usable_cores


def config_for(scheduler: str, workers: int = 1):
    return load_config(overrides={"cluster": {"scheduler": scheduler, "workers": workers, "threads_per_worker": 1},
                                  "tiling": {"region_px": 1024}})


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


def test_auto_workers_use_the_cores_this_process_is_given():
    """A SLURM job or `taskset` gives the process fewer cores than the machine has: ``auto`` counts those."""
    probe = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
             "from pathoseg.config import load_config; from pathoseg.system import local_workers; "
             "print(local_workers(load_config().cluster))")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "1\n"


def test_worker_counts():
    cores = usable_cores()
    assert 1 <= local_workers(load_config().cluster) <= cores
    assert local_workers(load_config(overrides={"cluster": {"workers": cores + 3}}).cluster) == cores + 3
    assert local_workers(load_config(overrides={"cluster": {"threads_per_worker": cores}}).cluster) == 1
    with pytest.raises(ConfigError, match="cluster.workers: 0 is not"):
        load_config(overrides={"cluster": {"workers": 0}})

"""Region tasks on a real Dask LocalCluster give exactly what the in-process run gives."""

from __future__ import annotations

import gzip

import pytest

from pathoseg.config import load_config
from pathoseg.pipeline import segment_slide


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

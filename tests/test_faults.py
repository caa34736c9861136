"""Faults: a worker killed mid-batch, and a client killed mid-run; the outputs stay complete and unduplicated."""

from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from pathoseg.batch import run_batch
from pathoseg.config import load_config
from pathoseg.distributed import open_runner
from pathoseg.io.regions import finished_regions
from pathoseg.synthetic import write_synthetic_slide


def small_regions_config(scheduler: str, workers: int = 1):
    return load_config(overrides={"cluster": {"scheduler": scheduler, "workers": workers, "threads_per_worker": 1},
                                  "tiling": {"region_px": 512, "margin_px": 96}})


def geojson_ids(path):
    return [f["id"] for f in json.loads(gzip.decompress(path.read_bytes()))["features"]]


def wait_for(condition, timeout_s: float = 300):
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.2)


@pytest.mark.timeout(900)
def test_batch_survives_a_killed_worker(tmp_path):
    archive, out = tmp_path / "archive", tmp_path / "results"
    archive.mkdir()
    for seed in (1, 2):
        write_synthetic_slide(archive / f"slide{seed}.svs", 1500, 1200, tile_px=256, min_level_px=256, seed=seed)
    (archive / "corrupt.svs").write_bytes(b"II*\x00" + os.urandom(4096))
    config = small_regions_config("local", workers=2)
    with open_runner(config.cluster, config.model) as runner:
        pids = runner.client.run(os.getpid)
        result: dict = {}
        thread = threading.Thread(target=lambda: result.setdefault("rows", run_batch(archive, out, config, runner)))
        thread.start()
        wait_for(lambda: len(finished_regions(out / "slide1.svs" / "store.zarr" / "nuclei")) >= 1)
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        thread.join(timeout=800)
    statuses = {row["slide"]: row["status"] for row in result["rows"]}
    assert statuses == {"corrupt.svs": "failed", "slide1.svs": "ok", "slide2.svs": "ok"}
    for name in ("slide1.svs", "slide2.svs"):
        summary = json.loads((out / name / "summary.json").read_text())
        assert len(finished_regions(out / name / "store.zarr" / "nuclei")) == summary["grid"]["regions"] >= 6
        ids = geojson_ids(out / name / "nuclei.geojson.gz")
        assert len(ids) == len(set(ids)) == summary["nuclei"] > 50
    before = (out / "manifest.csv").read_text()
    rows = run_batch(archive, out, small_regions_config("inprocess"))
    assert {row["slide"]: row["status"] for row in rows}["slide1.svs"] == "skipped"
    with open(out / "manifest.csv", newline="") as handle:
        assert {r["slide"]: r["nuclei"] for r in csv.DictReader(handle)} == \
               {r["slide"]: r["nuclei"] for r in csv.DictReader(before.splitlines())}


@pytest.mark.timeout(900)
def test_killed_client_leaves_no_complete_looking_output_and_resumes(svs_slide, tmp_path):
    config_file = tmp_path / "small.yaml"
    config_file.write_text("tiling: {region_px: 512, margin_px: 96}\ncluster: {threads_per_worker: 1}\n")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pathoseg.cli", "segment", str(svs_slide), "-o", str(out), "-c",
               str(config_file), "--scheduler", "inprocess", "--quiet"]
    process = subprocess.Popen(command)
    try:
        wait_for(lambda: len(finished_regions(out / "store.zarr" / "nuclei")) >= 2)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (out / "nuclei.geojson.gz").exists() and not (out / "summary.json").exists()
    done_before = len(finished_regions(out / "store.zarr" / "nuclei"))
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=800)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["regions_reused"] >= done_before >= 2
    ids = geojson_ids(out / "nuclei.geojson.gz")
    assert len(ids) == len(set(ids)) == summary["nuclei"]

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
from clusters import SMALL_CONFIG

from pathoseg.batch import run_batch
from pathoseg.config import load_config
from pathoseg.distributed import open_runner
from pathoseg.io.regions import finished_regions
from pathoseg.synthetic import write_synthetic_slide


def small_regions_config(scheduler: str, workers: int = 1):
    return load_config(
        overrides={
            "cluster": {"scheduler": scheduler, "workers": workers, "threads_per_worker": 1},
            "tiling": {"region_px": 512, "margin_px": 96},
            "model": {"name": "pathoseg-fast"},
        }
    )


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
        assert {r["slide"]: r["nuclei"] for r in csv.DictReader(handle)} == {
            r["slide"]: r["nuclei"] for r in csv.DictReader(before.splitlines())
        }


@pytest.mark.timeout(900)
def test_killed_client_leaves_no_complete_looking_output_and_resumes(svs_slide, tmp_path):
    config_file = tmp_path / "small.yaml"
    config_file.write_text(SMALL_CONFIG)
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "pathoseg.cli",
        "segment",
        str(svs_slide),
        "-o",
        str(out),
        "-c",
        str(config_file),
        "--scheduler",
        "inprocess",
        "--quiet",
    ]
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


def small_slide(folder) -> os.PathLike:
    return write_synthetic_slide(folder / "small.svs", 1280, 1024, tile_px=256, min_level_px=256, seed=5)


def segment_command(slide, out, *extra):
    return [
        sys.executable,
        "-m",
        "pathoseg.cli",
        "segment",
        str(slide),
        "-o",
        str(out),
        "--scheduler",
        "inprocess",
        "--model",
        "pathoseg-fast",
        "--quiet",
        *extra,
    ]


def region_npz(out):
    return sorted((out / "store.zarr" / "nuclei").glob("region_*.npz"))


def nuclei_text(out):
    return gzip.decompress((out / "nuclei.geojson.gz").read_bytes())


def flip_byte(path, position: float = 0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * position)] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.timeout(600)
def test_damaged_region_files_and_chunks_are_recomputed_not_read(tmp_path, caplog):
    from pathoseg.pipeline import segment_slide

    slide, out = small_slide(tmp_path), tmp_path / "out"
    config = small_regions_config("inprocess")
    first = segment_slide(slide, out, config)
    before = nuclei_text(out)
    regions = region_npz(out)
    assert len(regions) == first["grid"]["regions"] >= 4
    for number, path in enumerate(regions):  # every region file damaged: half truncated, half with a flipped bit
        if number % 2:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        else:
            flip_byte(path)
    chunk = max((out / "store.zarr" / "0").glob("0.*.*"), key=lambda p: p.stat().st_size)
    original_chunk = chunk.read_bytes()
    flip_byte(chunk, 0.6)
    caplog.set_level("WARNING")
    second = segment_slide(slide, out, config)
    assert second["run"]["regions_computed"] == len(regions) and second["run"]["regions_reused"] == 0
    assert chunk.read_bytes() == original_chunk  # the damaged block was tiled again, not read as tissue
    assert sum("does not read back" in record.getMessage() for record in caplog.records) == len(regions)
    assert any("changed since it was written" in record.getMessage() for record in caplog.records)
    assert nuclei_text(out) == before


@pytest.mark.timeout(600)
def test_a_second_run_on_the_same_output_folder_refuses(tmp_path):
    slide = write_synthetic_slide(tmp_path / "wide.svs", 2560, 2048, tile_px=256, min_level_px=256, seed=6)
    config_file, out = tmp_path / "small.yaml", tmp_path / "out"
    config_file.write_text(SMALL_CONFIG)
    first = subprocess.Popen(segment_command(slide, out, "-c", str(config_file)))
    try:
        wait_for(lambda: len(region_npz(out)) >= 1)
        second = subprocess.run(segment_command(slide, out), capture_output=True, text=True, timeout=300)
        first_still_running = first.poll() is None
    finally:
        assert first.wait(timeout=500) == 0
    assert first_still_running, "the first run ended before the second was refused: the test needs a longer run"
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "another pathoseg run is writing here" in lines[0] and str(first.pid) in lines[0]
    summary = json.loads((out / "summary.json").read_text())
    ids = geojson_ids(out / "nuclei.geojson.gz")
    assert len(ids) == len(set(ids)) == summary["nuclei"] > 20
    assert summary["run"]["regions_computed"] == summary["grid"]["regions"]  # the second run wrote nothing


@pytest.fixture
def small_disk(tmp_path):
    """A real 24 MB filesystem (tmpfs), to fill up; skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill_disk(disk, leave_bytes: int):
    """Fill ``disk`` up, then free ``leave_bytes``; returns the filler file."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:  # unbuffered: nothing left to flush (and fail) on close
        try:
            while handle.write(b"\0" * 4096):
                pass
        except OSError:
            pass
    os.truncate(filler, max(0, filler.stat().st_size - leave_bytes))
    return filler


@pytest.mark.timeout(600)
def test_a_full_disk_is_one_line_keeps_the_outputs_and_a_rerun_completes(tmp_path, small_disk):
    slide, out = small_slide(tmp_path), small_disk / "out"
    assert subprocess.run(segment_command(slide, out), capture_output=True, timeout=500).returncode == 0
    kept = {name: (out / name).read_bytes() for name in ("summary.json", "nuclei.geojson.gz", "report.html")}
    filler = fill_disk(small_disk, len(kept["nuclei.geojson.gz"]) // 2)  # the new GeoJSON fails halfway
    full = subprocess.run(
        segment_command(slide, out, "--table", "--no-gzip"), capture_output=True, text=True, timeout=500
    )
    assert full.returncode == 3
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left on the disk" in lines[0] and str(out) in lines[0], full.stderr
    assert {name: (out / name).read_bytes() for name in kept} == kept
    assert not list(out.glob(".*.partial")) and not (out / "nuclei.geojson").exists()
    filler.unlink()
    rerun = subprocess.run(
        segment_command(slide, out, "--table", "--no-gzip"), capture_output=True, text=True, timeout=500
    )
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["regions_computed"] == 0 and (out / "nuclei.csv").is_file()
    assert len(json.loads((out / "nuclei.geojson").read_text())["features"]) == summary["nuclei"]

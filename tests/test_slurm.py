"""SLURM for real: a one-node cluster (slurmctld + slurmd + munged, started here) runs the array script over an
archive and the dask-jobqueue launcher's `dask worker` jobs; both give the in-process run's GeoJSON."""

from __future__ import annotations

import subprocess
import sys

import pytest
from clusters import BIN, SMALL_CONFIG, assert_same_outputs, geojson, slurm_cluster, wait_for, wait_for_slurm_jobs
from conftest import REPO

from pathoseg.batch import find_slides, safe_name


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as env:
        yield env


@pytest.mark.timeout(900)
def test_array_job_segments_every_slide(slurm, archive, reference, tmp_path):
    slides = sorted(find_slides(archive))
    listing = tmp_path / "slides.txt"
    listing.write_text("".join(f"{slide}\n" for slide in slides))
    (tmp_path / "small.yaml").write_text(SMALL_CONFIG)
    out = tmp_path / "results"
    # The script asks for a GPU, 8 cores and 32 GB; this node has 2 cores and no GPU: override them, as users do.
    submit = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--array=0-{len(slides) - 1}",
            "--gres=none",
            "--cpus-per-task=1",
            "--mem=3G",
            "-o",
            str(tmp_path / "job-%A_%a.out"),
            "--chdir",
            str(tmp_path),
            str(REPO / "workflows/slurm/segment_array.sbatch"),
            str(listing),
            str(out),
            "-c",
            str(tmp_path / "small.yaml"),
        ],
        env={**slurm, "PATHOSEG": str(BIN / "pathoseg"), "PATHOSEG_DEVICE": "cpu"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert submit.returncode == 0, submit.stderr
    wait_for_slurm_jobs(slurm, submit.stdout.strip().split(";")[0])
    logs = "".join(path.read_text() for path in tmp_path.glob("job-*.out"))
    for slide in slides:
        array_name = "__".join(slide.parts[1:])  # the script flattens the slide's absolute path
        assert (out / array_name / "summary.json").is_file(), logs
        assert geojson(out, array_name) == geojson(reference, safe_name(slide, archive))


@pytest.mark.timeout(900)
def test_dask_jobqueue_workers_segment_the_archive(slurm, archive, reference, tmp_path):
    pytest.importorskip("dask_jobqueue")
    (tmp_path / "small.yaml").write_text(SMALL_CONFIG)
    out = tmp_path / "results"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "workflows/slurm/dask_batch.py"),
            str(archive),
            str(out),
            "--jobs",
            "2",
            "--partition",
            "debug",
            "--cores",
            "1",
            "--memory",
            "3GB",
            "--gpus-per-job",
            "0",
            "--walltime",
            "00:20:00",
            "--interface",
            "lo",
            "--log-dir",
            str(tmp_path / "logs"),
            "--wait-minutes",
            "5",
            "--",
            "-c",
            str(tmp_path / "small.yaml"),
            "--quiet",
        ],
        env={**slurm, "PATH": f"{BIN}:{slurm['PATH']}"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 slides: 2 done" in result.stdout
    assert_same_outputs(archive, reference, out)
    # The worker jobs are cancelled when the launcher closes its cluster.
    wait_for(
        lambda: not subprocess.run(["squeue", "-h"], env=slurm, capture_output=True, text=True).stdout.strip(),
        60,
        "the worker jobs to be cancelled",
    )

"""The cluster workflows: the Dask-on-SLURM job script renders; the array script runs the right slide."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO


def test_dask_jobqueue_job_script_declares_the_gpu():
    pytest.importorskip("dask_jobqueue")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "workflows/slurm/dask_batch.py"),
            "/archive",
            "/results",
            "--dry-run",
            "--partition",
            "gpu-long",
            "--venv",
            "/opt/venv",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    script = result.stdout
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH -p gpu-long" in script
    assert "--resources GPU=1" in script
    assert "source /opt/venv/bin/activate" in script


def test_array_script_runs_the_tasks_slide(tmp_path):
    slides = tmp_path / "slides.txt"
    slides.write_text("/archive/a.svs\n/archive/case 2/b.ndpi\n")
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1", "PATHOSEG": "echo"}
    script = REPO / "workflows/slurm/segment_array.sbatch"
    result = subprocess.run(
        ["bash", str(script), str(slides), "/results", "--stain", "ihc"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "segment /archive/case 2/b.ndpi -o /results/archive__case_2__b.ndpi "
        "--scheduler local --device auto --quiet --stain ihc"
    )
    env["SLURM_ARRAY_TASK_ID"] = "5"
    missing = subprocess.run(
        ["bash", str(script), str(slides), "/results"], env=env, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and "no line 6" in missing.stderr

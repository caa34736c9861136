"""A Dask cluster started by its own CLI (`dask scheduler`, `dask worker` in their own directories): batch output
equals the in-process run's byte for byte, survives a killed worker and a killed client, and cluster problems (no
scheduler, a worker without pathoseg or without the files) end in one line naming the culprit."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from clusters import (
    BIN,
    SMALL_CONFIG,
    assert_same_outputs,
    client_folder,
    dask_cli_cluster,
    first_slide_regions,
    free_port,
    start_worker,
    wait_for,
)
from distributed import Client

import pathoseg
from pathoseg.batch import find_slides, safe_name


def batch_command(archive: Path, client_dir: Path, address: str) -> list[str]:
    return [
        str(BIN / "pathoseg"),
        "batch",
        os.path.relpath(archive, client_dir),
        "-o",
        "results",
        "-c",
        "small.yaml",
        "--scheduler",
        address,
        "--quiet",
    ]


@pytest.mark.timeout(900)
def test_cli_cluster_batch_equals_in_process_despite_a_killed_worker(archive, reference, tmp_path):
    client_dir = client_folder(tmp_path)
    with dask_cli_cluster(tmp_path / "cluster") as cluster:
        batch = subprocess.Popen(
            batch_command(archive, client_dir, cluster.address),
            cwd=client_dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for(lambda: first_slide_regions(client_dir / "results", archive) >= 1, 300, "a finished region")
        os.kill(next(iter(cluster.worker_pids().values())), signal.SIGKILL)
        stdout, stderr = batch.communicate(timeout=800)
        assert batch.returncode == 0, stderr
    assert stdout.startswith("2 slides: 2 done, 0 already done, 0 failed")
    assert_same_outputs(archive, reference, client_dir / "results")


@pytest.mark.timeout(900)
def test_cli_cluster_killed_client_resumes_to_the_same_output(archive, reference, tmp_path):
    client_dir = client_folder(tmp_path)
    results = client_dir / "results"
    with dask_cli_cluster(tmp_path / "cluster") as cluster:
        command = batch_command(archive, client_dir, cluster.address)
        batch = subprocess.Popen(command, cwd=client_dir)
        try:
            wait_for(lambda: first_slide_regions(results, archive) >= 2, 300, "two finished regions")
        finally:
            batch.send_signal(signal.SIGKILL)
            batch.wait()
        done_before = first_slide_regions(results, archive)
        first = safe_name(sorted(find_slides(archive))[0], archive)
        assert not (results / first / "summary.json").exists()
        rerun = subprocess.run(command, cwd=client_dir, capture_output=True, text=True, timeout=800)
        assert rerun.returncode == 0, rerun.stderr
    assert first_slide_regions(results, archive) >= done_before >= 2
    assert_same_outputs(archive, reference, results)


def run_segment(slide: Path, out: Path, address: str, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(BIN / "pathoseg"),
            "segment",
            str(slide),
            "-o",
            str(out),
            "-c",
            str(config),
            "--scheduler",
            address,
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_scheduler_that_is_not_there_is_one_line(archive, tmp_path):
    (tmp_path / "small.yaml").write_text(SMALL_CONFIG)
    address = f"tcp://127.0.0.1:{free_port()}"
    started = time.time()
    result = run_segment(archive / "cases" / "slide1.svs", tmp_path / "out", address, tmp_path / "small.yaml")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {address}: no Dask scheduler answered within 5 s")
    assert time.time() - started < 60
    assert not (tmp_path / "out" / "summary.json").exists()


SITELESS_WORKER = [sys.executable, "-S", "-m", "distributed.cli.dask_worker"]


def error_with_one_odd_worker(
    archive: Path, tmp_path: Path, name: str, command: list[str], env: dict | None = None
) -> str:
    """Segment a slide on a cluster whose only worker is started by ``command``: the client must stop with exit
    code 2 and one line naming that worker; returns the line."""
    (tmp_path / "small.yaml").write_text(SMALL_CONFIG)
    with dask_cli_cluster(tmp_path / "cluster", worker_resources=()) as cluster:
        cluster.workers.append(start_worker(cluster.address, tmp_path / name, name, env=env, command=command))
        with Client(cluster.address) as client:
            client.wait_for_workers(1, timeout=120)
        result = run_segment(
            archive / "cases" / "slide1.svs", tmp_path / "out", cluster.address, tmp_path / "small.yaml"
        )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: worker tcp://127.0.0.1:"), lines
    return lines[0]


def test_a_worker_without_pathoseg_is_named(archive, tmp_path):
    # A worker whose Python has dask but not pathoseg: site-packages on PYTHONPATH without the site module, so the
    # editable install's .pth file (how pathoseg is installed here) is not read.
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    probe = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            "import distributed\ntry:\n import pathoseg\nexcept ImportError:\n raise SystemExit(3)",
        ],
        env=env,
        capture_output=True,
        cwd=tmp_path,
    )
    if probe.returncode != 3:
        pytest.skip("pathoseg is not an editable install here: cannot make a worker without it")
    line = error_with_one_odd_worker(archive, tmp_path, "bare", SITELESS_WORKER, env)
    assert "cannot run pathoseg" in line and "pathoseg" in line


def test_a_worker_with_another_pathoseg_version_is_named(archive, tmp_path):
    # A node with another release installed: this source tree copied with another version number, and the worker's
    # Python told to import that copy (site-packages on PYTHONPATH without the site module, as above).
    other = tmp_path / "other-release"
    shutil.copytree(Path(pathoseg.__file__).parent, other / "pathoseg", ignore=shutil.ignore_patterns("weights"))
    init = other / "pathoseg" / "__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{pathoseg.__version__}"', '__version__ = "0.0.9"'))
    env = {**os.environ, "PYTHONPATH": f"{other}{os.pathsep}{sysconfig.get_paths()['purelib']}"}
    probe = subprocess.run(
        [sys.executable, "-S", "-c", "import pathoseg; print(pathoseg.__version__)"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert probe.stdout.strip() == "0.0.9", probe.stderr
    line = error_with_one_odd_worker(archive, tmp_path, "old-node", SITELESS_WORKER, env)
    assert f"runs pathoseg 0.0.9, this client {pathoseg.__version__}" in line


def test_a_worker_that_cannot_read_the_slide_is_named(archive, tmp_path):
    # A worker on a "node" where the archive's filesystem is not mounted: its own mount namespace with an empty
    # tmpfs over the archive folder.
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a mount namespace here (needs root)")
    hide_archive = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'mount -t tmpfs none "{archive}" && exec "$0" "$@"',
        str(BIN / "dask"),
        "worker",
    ]
    line = error_with_one_odd_worker(archive, tmp_path, "other-node", hide_archive)
    assert f"cannot read {archive / 'cases' / 'slide1.svs'}" in line and "filesystem every worker shares" in line


@pytest.mark.timeout(600)
def test_region_tasks_go_only_to_workers_with_the_gpu_resource(archive, tmp_path):
    config = tmp_path / "gpu.yaml"
    config.write_text(
        "tiling: {region_px: 512, margin_px: 96}\nmodel: {name: pathoseg-fast, device: cpu}\n"
        "cluster: {threads_per_worker: 1, region_resources: {GPU: 1}}\n"
    )
    with dask_cli_cluster(tmp_path / "cluster", worker_resources=("GPU=1", None)) as cluster:
        with Client(cluster.address) as client:
            client.get_task_stream()  # registers the scheduler's task-stream plugin before the run
            names = {address: info["name"] for address, info in client.scheduler_info()["workers"].items()}
            result = run_segment(archive / "cases" / "slide2.svs", tmp_path / "out", cluster.address, config)
            assert result.returncode == 0, result.stderr
            stream = client.get_task_stream()
    region_workers = {names[record["worker"]] for record in stream if "pathoseg-region" in str(record["key"])}
    tiling_tasks = [record for record in stream if "pathoseg-tiles" in str(record["key"])]
    assert region_workers == {"w0"} and tiling_tasks

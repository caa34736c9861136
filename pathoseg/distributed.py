"""Running a slide's tasks: in-process, on an embedded LocalCluster (default) or on an existing Dask scheduler.

Two kinds of task: tiling a block of the slide into the zarr store, and segmenting a region (a block plus margin).
A region task depends on the tiling tasks of the blocks its window touches, so tiling and segmentation overlap and
the client never reads slide pixels. The model is loaded once per worker process (a WorkerPlugin fills a per-process
cache); GPU workers declare the resource ``GPU=1`` and every region task asks for it, so one GPU never runs two
region tasks at once (tiling tasks need no GPU).
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import astuple
from pathlib import Path

import torch
import zarr
from distributed import Client, Future, LocalCluster, WorkerPlugin, as_completed

from pathoseg import __version__
from pathoseg.config import ClusterConfig, ModelConfig
from pathoseg.errors import PathosegError
from pathoseg.io import ngff
from pathoseg.io.regions import RegionResult
from pathoseg.models.engines import choose_runtime
from pathoseg.models.infer import Predictor, predictor_for, resolve_device
from pathoseg.models.precision import resolve_precision
from pathoseg.models.weights import int8_ir_of, load_model
from pathoseg.region import RegionSettings, segment_region, timed
from pathoseg.system import local_workers, retain_freed_memory
from pathoseg.tiling.grid import Region
from pathoseg.tiling.tiler import TileJob, tile_block

Block = tuple[int, int]

log = logging.getLogger(__name__)

_PREDICTORS: dict[tuple, Predictor] = {}


def get_predictor(model: ModelConfig) -> Predictor:
    """This process's predictor for ``model`` (loaded on first use)."""
    key = astuple(model)
    if key not in _PREDICTORS:
        loaded = load_model(model.name)
        predictor = _PREDICTORS[key] = predictor_for(loaded.network, model, int8_ir=loaded.int8_ir)
        log.info("loaded model %s on %s (%s, %s)", model.name, predictor.device, predictor.runtime, predictor.precision)
    return _PREDICTORS[key]


def predictor_facts(model: ModelConfig) -> dict[str, str]:
    """Device, runtime and precision this process's predictor for ``model`` runs in (resolved as the predictor
    resolves them, without building it)."""
    device = resolve_device(model.device)
    runtime = choose_runtime(model.runtime, device)
    int8_available = runtime == "openvino" and int8_ir_of(model.name) is not None
    return {
        "device": str(device),
        "runtime": runtime,
        "precision": resolve_precision(model.precision, device, int8_available),
    }


class ModelPlugin(WorkerPlugin):
    """Loads the model when a worker starts, and sets its torch thread count."""

    name = "pathoseg-model"

    def __init__(self, model: ModelConfig, torch_threads: int):
        self.model, self.torch_threads = model, torch_threads

    def setup(self, worker: object) -> None:
        """Set the worker's torch threads and heap, and load the model once, before its first task."""
        torch.set_num_threads(self.torch_threads)
        retain_freed_memory()
        get_predictor(self.model)


def region_task(
    store_path: str, region: Region, settings: RegionSettings, model: ModelConfig, *tiled_blocks: int
) -> RegionResult:
    """Read the pixels a region's inference sees from the zarr store and segment it (runs on a worker).

    ``tiled_blocks`` are the results of the tiling tasks it waits for (unused).
    """
    seconds: dict[str, float] = {}
    reads = region.reads
    with timed(seconds, "read"):
        root = zarr.open_group(store_path, mode="r", zarr_format=2)
        pixels = ngff.read_window(root, reads.y, reads.x, reads.height, reads.width)
    return segment_region(region, pixels, ngff.frame_of(root), get_predictor(model), settings, seconds)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process.

    On Linux the high-water mark of /proc/self/status (VmHWM): getrusage's ru_maxrss survives fork and exec, so a
    worker process started by a client holding 3 GB read 3 GB from it whatever it used itself. Elsewhere ru_maxrss
    (bytes on macOS, KiB on the other systems).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class RegionRunner:
    """Runs region tasks and hands each result to a callback as soon as it is done (the workers load the model when
    the first are sent), and maps other functions over the workers (``map_in_order``)."""

    def __init__(
        self, client: Client | None, model: ModelConfig, resources: dict | None = None, torch_threads: int = 1
    ):
        self.client, self.model, self.resources, self.torch_threads = client, model, resources, torch_threads
        self._workers_load_the_model = False

    def check_workers(self, readable: list[Path], writable: list[Path]) -> None:
        """Raise ClusterError naming a worker that cannot read ``readable`` or write ``writable``."""
        if self.client is None:
            return
        answers = self.client.run(unusable_paths, [str(p) for p in readable], [str(p) for p in writable])
        for worker, problems in sorted(answers.items()):
            if problems:
                raise ClusterError(
                    f"worker {worker}: cannot {problems[0]} (the slides and the output folder must "
                    f"be on a filesystem every worker shares, under the same path)"
                )

    def run(
        self,
        job: TileJob,
        block_tiles: Mapping[Block, list],
        regions: list[Region],
        settings: RegionSettings,
        on_result: Callable[[RegionResult], None],
        on_tiles: Callable[[int], None] = lambda n: None,
    ) -> None:
        """Tile the blocks in ``block_tiles`` (block -> its tiles) and segment ``regions``.

        Each block is tiled once, ordered just before the first region whose window needs it; ``on_tiles`` gets
        the number of tiles each tiling task wrote, ``on_result`` each region's result, as soon as they are done.
        """

        def needs(region: Region) -> list[Block]:
            """The blocks of tiles a region's window reads."""
            return [block for block in job.grid.blocks_in(region.reads) if block in block_tiles]

        if self.client is not None and regions and not self._workers_load_the_model:
            # only now: a slide whose regions are all done (outputs rendered again) needs no model on the workers
            self.client.register_plugin(ModelPlugin(self.model, self.torch_threads))
            self._workers_load_the_model = True
        if self.client is None:
            tiled: set[Block] = set()
            for region in regions:
                for block in needs(region):
                    if block not in tiled:
                        on_tiles(tile_block(job, block, block_tiles[block]))
                        tiled.add(block)
                on_result(region_task(job.store_path, region, settings, self.model))
            return
        tiling: dict[Block, Future] = {}
        segmenting = []
        for region in regions:
            for block in needs(region):
                if block not in tiling:
                    tiling[block] = self.client.submit(
                        tile_block,
                        job,
                        block,
                        block_tiles[block],
                        retries=2,
                        pure=False,
                        key=f"pathoseg-tiles-{job.store_path}-{block[0]}_{block[1]}",
                    )
            segmenting.append(
                self.client.submit(
                    region_task,
                    job.store_path,
                    region,
                    settings,
                    self.model,
                    *(tiling[b] for b in needs(region)),
                    key=f"pathoseg-region-{job.store_path}-{region.index}",
                    resources=self.resources,
                    retries=2,
                    pure=False,
                )
            )
        futures = [*tiling.values(), *segmenting]
        try:
            for future in as_completed(futures):
                result = future.result()
                if isinstance(result, RegionResult):
                    on_result(result)
                else:
                    on_tiles(result)
                future.release()
        finally:
            for future in futures:
                future.cancel()

    def map_in_order(self, function: Callable, items: Iterable, in_flight_per_worker: int = 2) -> Iterator:
        """``function(item)`` for each item, yielded in order: on the workers, at most ``in_flight_per_worker`` tasks
        per worker ahead of the consumer (so finished results do not pile up), or here without a cluster."""
        if self.client is None:
            yield from map(function, items)
            return
        limit = in_flight_per_worker * max(1, len(self.client.scheduler_info()["workers"]))
        pending: deque[Future] = deque()
        try:
            for item in items:
                pending.append(self.client.submit(function, item, pure=False))
                if len(pending) >= limit:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    def engine_facts(self) -> dict[str, str | int]:
        """``predictor_facts`` of the workers (a value that differs between workers lists each, comma-separated)
        and how many workers ran the regions (``workers``; 1 in-process)."""
        if self.client is None:
            return {**predictor_facts(self.model), "workers": 1}
        per_worker = list(self.client.run(predictor_facts, self.model).values())
        return {
            **{key: ",".join(sorted({facts[key] for facts in per_worker})) for key in per_worker[0]},
            "workers": len(per_worker),
        }

    def worker_peak_rss_bytes(self) -> int:
        """Largest peak RSS of any worker process (this process when in-process)."""
        if self.client is None:
            return peak_rss_bytes()
        peaks = self.client.run(peak_rss_bytes)
        return max(peaks.values(), default=0)


class ClusterError(PathosegError):
    """A Dask cluster that cannot run the work: no scheduler, no worker, or a worker without pathoseg or without
    access to the files."""


def unusable_paths(readable: list[str], writable: list[str]) -> list[str]:
    """What this process cannot do with the given paths, e.g. ``["read /a/slide.svs"]`` (runs on workers)."""
    return [f"read {path}" for path in readable if not os.access(path, os.R_OK)] + [
        f"write {path}" for path in writable if not os.access(path, os.W_OK)
    ]


def region_resources(cluster: ClusterConfig, model: ModelConfig, local_gpu: bool = False) -> dict | None:
    """The Dask resources each region task asks for: the configured ones, else ``{"GPU": 1}`` when the model runs
    on CUDA (named, or ``auto`` on a local cluster that has a GPU), else none."""
    if cluster.region_resources:
        return dict(cluster.region_resources)
    return {"GPU": 1} if model.device.startswith("cuda") or local_gpu else None


def _connect(cluster: ClusterConfig) -> Client:
    """A client of the scheduler at ``cluster.scheduler`` whose workers run this version of pathoseg."""
    address = cluster.scheduler
    try:
        client = Client(address, timeout=f"{cluster.connect_timeout_s}s")
    except (OSError, TimeoutError, ValueError) as error:
        raise ClusterError(
            f"{address}: no Dask scheduler answered within {cluster.connect_timeout_s:.0f} s "
            f"({error.__class__.__name__})"
        ) from None
    try:
        client.wait_for_workers(1, timeout=cluster.worker_timeout_s)
    except TimeoutError:
        client.close()
        raise ClusterError(f"{address}: no Dask worker connected within {cluster.worker_timeout_s:.0f} s") from None
    versions = client.run(pathoseg_version, on_error="return")
    broken = {worker: answer for worker, answer in versions.items() if isinstance(answer, BaseException)}
    if broken:
        client.close()
        worker, failure = sorted(broken.items())[0]
        raise ClusterError(
            f"worker {worker}: cannot run pathoseg ({failure.__class__.__name__}: "
            f"{str(failure).splitlines()[0] if str(failure) else ''}); install it in the workers' "
            f"environment"
        ) from None
    other = {worker: version for worker, version in versions.items() if version != __version__}
    if other:
        client.close()
        worker, version = sorted(other.items())[0]
        raise ClusterError(
            f"worker {worker}: runs pathoseg {version}, this client {__version__}; install the same "
            f"version on every worker (results would otherwise depend on where a region ran)"
        )
    return client


def pathoseg_version() -> str:
    """This process's pathoseg version (run on each worker to check they match the client's)."""
    return __version__


@contextmanager
def open_runner(cluster: ClusterConfig, model: ModelConfig, tasks: int | None = None) -> Iterator[RegionRunner]:
    """A RegionRunner for ``cluster.scheduler``: ``inprocess``, ``local`` (embedded LocalCluster, sized by
    ``local_workers`` for ``tasks`` region tasks) or an address.

    Raises ClusterError for a scheduler that does not answer, has no worker, or has a worker without pathoseg.
    """
    if cluster.scheduler == "inprocess":
        torch.set_num_threads(cluster.threads_per_worker)
        retain_freed_memory()
        yield RegionRunner(None, model)
        return
    local = None
    if cluster.scheduler == "local":
        device = resolve_device(model.device)
        gpu_memory = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
        resources = region_resources(cluster, model, device.type == "cuda")
        local = LocalCluster(
            n_workers=local_workers(cluster, tasks, gpu_memory),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            resources=resources,
            silence_logs=logging.ERROR,
        )
        client = Client(local)
    else:
        resources = region_resources(cluster, model)
        client = _connect(cluster)
    try:
        yield RegionRunner(client, model, resources, cluster.threads_per_worker)
    finally:
        client.close()
        if local is not None:
            local.close()

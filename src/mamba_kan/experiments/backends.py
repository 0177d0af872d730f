"""Where cells run: a local pool of worker processes, or Ray tasks on a cluster.

Both hand each finished cell's result dict back to the driver through ``on_result``; the driver alone writes the
database. A worker process that dies mid-cell (segfault, out-of-memory kill) gets its cell retried a bounded number
of times, then recorded as failed, so one bad cell never ends the sweep.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from mamba_kan.errors import UserError
from mamba_kan.experiments.worker import CellJob, execute_cell, failed_result, init_worker

log = logging.getLogger(__name__)

BACKENDS = ("local", "ray", "slurm")
#: times a cell is retried after its worker process died (not after an ordinary exception, which is a result)
WORKER_DEATH_RETRIES = 2

OnResult = Callable[[CellJob, dict[str, Any]], None]


class Backend(Protocol):
    name: str
    workers: int
    threads: int

    def run(self, jobs: Sequence[CellJob], on_result: OnResult) -> None: ...

    def close(self) -> None: ...


# --- sizing --------------------------------------------------------------------------------------------------
def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS/Windows
        return os.cpu_count() or 1


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no usable CUDA is simply "no GPU"
        return 0


def _available_memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def plan_workers(n_jobs: int, workers: int | None, use_gpus: bool = True) -> tuple[int, int, int]:
    """(workers, torch threads per worker, GPUs to spread workers over).

    Default: one worker per GPU when there are GPUs; otherwise one single-threaded worker per core (small models
    scale better across processes than across threads), capped by the number of jobs and by memory (~2 GB each).
    Threads = cores // workers, so workers x threads never oversubscribes the cores.
    """
    cores = available_cores()
    gpus = _gpu_count() if use_gpus else 0
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if workers is None:
        if gpus:
            workers = gpus
        else:
            mem = _available_memory_gb()
            workers = cores if mem is None else max(1, min(cores, int(mem // 2)))
        workers = max(1, min(workers, n_jobs))
    threads = max(1, cores // workers)
    return workers, threads, gpus


# --- local pool ----------------------------------------------------------------------------------------------
class LocalBackend:
    """A pool of ``workers`` spawned processes (spawn, not fork: forking a process that has touched torch or CUDA
    is unsafe), each with ``threads`` torch threads and, when there are GPUs, its own GPU."""

    name = "local"

    def __init__(self, workers: int, threads: int, gpus: int = 0) -> None:
        self.workers, self.threads, self.gpus = workers, threads, gpus

    def _pool(self) -> cf.ProcessPoolExecutor:
        ctx = mp.get_context("spawn")
        queue = None
        if self.gpus:
            queue = ctx.Manager().Queue()
            for i in range(self.workers):
                queue.put(i % self.gpus)
        return cf.ProcessPoolExecutor(
            max_workers=self.workers, mp_context=ctx, initializer=init_worker, initargs=(self.threads, queue)
        )

    def run(self, jobs: Sequence[CellJob], on_result: OnResult) -> None:
        pending = list(jobs)
        deaths: dict[str, int] = {}
        while pending:
            broken: list[CellJob] = []
            pool = self._pool()
            try:
                futures = {pool.submit(execute_cell, job): job for job in pending}
                for fut in cf.as_completed(futures):
                    job = futures[fut]
                    try:
                        result = fut.result()
                    except cf.process.BrokenProcessPool:
                        # a worker died; every unfinished cell of this pool lands here, not only the culprit
                        broken.append(job)
                        continue
                    on_result(job, result)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
            pool.shutdown(wait=True)
            pending = []
            for job in broken:
                deaths[job.cell_key] = deaths.get(job.cell_key, 0) + 1
                if deaths[job.cell_key] > WORKER_DEATH_RETRIES:
                    on_result(job, failed_result(job.config, "worker process died (crash or out of memory)"))
                else:
                    log.warning("worker process died; retrying %s", job.run_id)
                    pending.append(job)

    def close(self) -> None:
        pass


# --- Ray -----------------------------------------------------------------------------------------------------
def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A quick TCP probe of ``host:port`` (or ``ray://host:port``), so an unreachable cluster is a one-line error
    in seconds rather than a long hang inside ray.init."""
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"invalid Ray address {address!r}; use 'auto', HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


class RayBackend:
    """Cells as Ray tasks. ``address``: None starts a local Ray instance (or reuses one this process already
    started), ``'auto'`` joins the cluster running on this machine, ``HOST:PORT``/``ray://HOST:PORT`` a remote one.

    Each task asks for ``threads`` CPUs (and ``gpus_per_cell`` GPUs). Ray re-executes a task whose worker process
    died (``max_retries``); the cell then resumes from its checkpoints if the run directory is on storage the nodes
    share. Results come back to the driver.
    """

    name = "ray"

    def __init__(self, address: str | None, threads: int = 1, gpus_per_cell: float = 0.0) -> None:
        try:
            import ray
        except ImportError:
            raise UserError("the ray backend needs Ray: pip install 'mamba-kan[ray]'") from None
        self._ray = ray
        if address not in (None, "auto", "local"):
            _check_reachable(address)
        self._owns_runtime = False
        if not ray.is_initialized():
            try:
                ray.init(
                    address=None if address == "local" else address,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    configure_logging=False,
                )
            except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
                where = address or "a new local instance"
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise UserError(f"cannot connect to Ray ({where}): {first}") from None
            self._owns_runtime = True
        self.threads = threads
        self.gpus_per_cell = gpus_per_cell
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, cpus // threads)

    def run(self, jobs: Sequence[CellJob], on_result: OnResult) -> None:
        ray = self._ray
        remote = ray.remote(
            num_cpus=self.threads,
            num_gpus=self.gpus_per_cell,
            max_retries=WORKER_DEATH_RETRIES,
            retry_exceptions=False,
        )(execute_cell)
        refs = {remote.remote(job): job for job in jobs}
        try:
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                ref = done[0]
                job = refs.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:  # retries exhausted (worker or node died)
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    result = failed_result(job.config, f"ray task failed: {first}")
                on_result(job, result)
        except BaseException:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise

    def close(self) -> None:
        if self._owns_runtime:
            self._ray.shutdown()

"""Where cells run: a local pool of worker processes, or Ray tasks on a cluster.

Both hand each finished cell's result dict back to the driver through ``on_result``; the driver alone writes the
database. A worker process that dies mid-cell (segfault, out-of-memory kill) breaks the local pool and with it
every unfinished cell; only the cells that were in flight are suspects, and each is re-run alone (one cell, one
process) before it is charged a death: a cell that completes alone is innocent, a cell that kills its lone worker
more than ``WORKER_DEATH_RETRIES`` times is recorded as failed. Cells that had not started are re-queued uncharged.
So one bad cell never ends the sweep and never fails another cell.

Workers exit when the driver dies (see :func:`mamba_kan.experiments.worker.init_worker`).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from mamba_kan.choices import BACKENDS as BACKENDS  # re-exported: the names backends are chosen by
from mamba_kan.errors import UserError
from mamba_kan.experiments.worker import CellJob, execute_cell, failed_result, init_worker, run_pool_cell

log = logging.getLogger(__name__)

#: times a cell is retried after its worker process died (not after an ordinary exception, which is a result)
WORKER_DEATH_RETRIES = 2

OnResult = Callable[[CellJob, dict[str, Any]], None]
#: ``(cell_key, step, is_start)`` for a running cell: its training step (``is_start``: where the run begins, which
#: for a resumed run is its checkpoint's step). Backends that can report it set ``reports_progress = True`` and
#: take ``on_progress`` in ``run``.
OnProgress = Callable[[str, int, bool], None]
CellFn = Callable[[CellJob], dict[str, Any]]
#: seconds the driver waits for a finished cell before it reads the step reports again
PROGRESS_POLL_S = 0.25


class Backend(Protocol):
    """Runs cells and hands each result to ``on_result`` in the driver's thread. A backend whose running cells
    report their training step also has ``reports_progress = True`` and accepts ``run(jobs, on_result,
    on_progress=...)`` (see ``OnProgress``); the local pool does, Ray and SLURM do not."""

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


def plan_workers(
    n_jobs: int, workers: int | None, threads: int = 1, use_gpus: bool = True
) -> tuple[int, int]:
    """(workers, GPUs to spread workers over) for cells of ``threads`` torch threads each.

    Default: one worker per GPU when there are GPUs; otherwise cores // threads workers (small models scale better
    across processes than across threads), capped by the number of jobs and by memory (~2 GB each). The thread
    count itself is the cells' (part of their key): sizing never changes it, so results do not depend on the queue.
    """
    cores = available_cores()
    gpus = _gpu_count() if use_gpus else 0
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if workers is None:
        if gpus:
            workers = gpus
        else:
            per_core = max(1, cores // max(1, threads))
            mem = _available_memory_gb()
            workers = per_core if mem is None else max(1, min(per_core, int(mem // 2)))
        workers = max(1, min(workers, n_jobs))
    return workers, gpus


# --- local pool ----------------------------------------------------------------------------------------------
class LocalBackend:
    """A pool of ``workers`` spawned processes (spawn, not fork: forking a process that has touched torch or CUDA
    is unsafe), sized for ``threads`` torch threads each and, when there are GPUs, each with its own GPU.

    ``cell_fn`` is what a worker runs for one job (default :func:`execute_cell`; it must be importable by name,
    as pickle sends functions by reference)."""

    name = "local"
    reports_progress = True

    def __init__(self, workers: int, threads: int, gpus: int = 0, cell_fn: CellFn = execute_cell) -> None:
        self.workers, self.threads, self.gpus = workers, threads, gpus
        self.cell_fn = cell_fn

    def _pool(self, workers: int) -> tuple[cf.ProcessPoolExecutor, Any, Any]:
        """A fresh pool with its "cell started" and step-progress queues (new ones per pool: a worker killed while
        writing to a queue cannot leave a later pool's queue locked)."""
        ctx = mp.get_context("spawn")
        started = (
            ctx.SimpleQueue()
        )  # written synchronously: a worker that dies right after put() was still heard
        progress = ctx.SimpleQueue()
        gpu_queue = None
        if self.gpus:
            gpu_queue = ctx.SimpleQueue()
            for i in range(workers):
                gpu_queue.put(i % self.gpus)
        pool = cf.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=ctx,
            initializer=init_worker,
            initargs=(self.threads, os.getpid(), started, gpu_queue, progress),
        )
        return pool, started, progress

    def run(
        self, jobs: Sequence[CellJob], on_result: OnResult, on_progress: OnProgress | None = None
    ) -> None:
        """Run ``jobs`` in parallel; after a pool breaks, re-run the cells that were in flight one at a time.
        ``on_progress`` receives the running cells' step reports (in this thread, between results)."""
        pending = list(jobs)
        deaths: dict[str, int] = {}
        while pending:
            suspects, pending = self._run_parallel(pending, on_result, on_progress)
            for job in suspects:  # one at a time, each alone in its process: a crash now is the cell's own
                self._run_alone(job, deaths, on_result, on_progress)

    def _run_parallel(
        self, jobs: list[CellJob], on_result: OnResult, on_progress: OnProgress | None = None
    ) -> tuple[list[CellJob], list[CellJob]]:
        """Run ``jobs`` in one pool until done or broken; returns (suspects, not started) when a worker died."""
        pool, started_q, progress_q = self._pool(self.workers)
        started: set[str] = set()
        unfinished: list[CellJob] = []
        try:
            futures = {pool.submit(run_pool_cell, self.cell_fn, job): job for job in jobs}
            for fut in _as_completed(futures, progress_q, on_progress):
                job = futures[fut]
                while not started_q.empty():
                    started.add(started_q.get())
                try:
                    result = fut.result()
                except cf.process.BrokenProcessPool:
                    unfinished.append(
                        job
                    )  # every unfinished cell of a broken pool lands here, not only the culprit
                    continue
                except Exception as exc:  # noqa: BLE001 - cell_fn raised (execute_cell never does): the cell failed
                    result = failed_result(job.config, f"{type(exc).__name__}: {exc}".splitlines()[0])
                on_result(job, result)
        except BaseException:
            _terminate(pool)
            raise
        pool.shutdown(wait=True)
        while not started_q.empty():
            started.add(started_q.get())
        suspects = [j for j in unfinished if j.cell_key in started]
        if unfinished and not suspects:  # died before announcing anything (e.g. in the initializer)
            suspects = unfinished
        if suspects:
            log.warning(
                "a worker process died; re-running the %d cell(s) that were in flight one at a time",
                len(suspects),
            )
        return suspects, [j for j in unfinished if j not in suspects]

    def _run_alone(
        self, job: CellJob, deaths: dict[str, int], on_result: OnResult, on_progress: OnProgress | None = None
    ) -> None:
        """Run one cell alone until it returns a result or has killed its worker more than the retries allow."""
        while True:
            pool, _, progress_q = self._pool(1)
            try:
                fut = pool.submit(run_pool_cell, self.cell_fn, job)
                for _done in _as_completed([fut], progress_q, on_progress):
                    pass
                result = fut.result()
            except cf.process.BrokenProcessPool:
                result = None
            except Exception as exc:  # noqa: BLE001 - see _run_parallel
                result = failed_result(job.config, f"{type(exc).__name__}: {exc}".splitlines()[0])
            except BaseException:
                _terminate(pool)
                raise
            pool.shutdown(wait=True)
            if result is not None:
                on_result(job, result)
                return
            deaths[job.cell_key] = deaths.get(job.cell_key, 0) + 1
            if deaths[job.cell_key] > WORKER_DEATH_RETRIES:
                on_result(job, failed_result(job.config, "worker process died (crash or out of memory)"))
                return
            log.warning("%s killed its worker process; retrying it", job.run_id)

    def close(self) -> None:
        pass


def _as_completed(
    futures: Iterable[cf.Future[Any]], progress_q: Any, on_progress: OnProgress | None
) -> Iterator[cf.Future[Any]]:
    """``concurrent.futures.as_completed``, passing the step reports that arrive meanwhile to ``on_progress``
    (every ``PROGRESS_POLL_S`` seconds, and before each finished future, so a cell's last report precedes its
    result)."""
    pending = set(futures)
    while pending:
        done, pending = cf.wait(pending, timeout=PROGRESS_POLL_S, return_when=cf.FIRST_COMPLETED)
        _drain(progress_q, on_progress)
        yield from done


def _drain(progress_q: Any, on_progress: OnProgress | None) -> None:
    """Pass every queued ``(cell_key, step, is_start)`` report to ``on_progress`` (dropped when there is none)."""
    while not progress_q.empty():
        cell_key, step, is_start = progress_q.get()
        if on_progress is not None:
            on_progress(cell_key, step, is_start)


def _terminate(pool: cf.ProcessPoolExecutor) -> None:
    """Stop a pool now, killing cells in flight (a driver that stops on an error or Ctrl-C must not wait for them:
    their checkpoints let the next run resume them). ``_processes`` is private, but the only handle on the
    workers before Python 3.14's ``terminate_workers``."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        proc.join(timeout=10)


# --- Ray -----------------------------------------------------------------------------------------------------
def check_ray_available() -> None:
    """UserError unless Ray can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError("the ray backend needs Ray: pip install 'mamba-kan[ray]'") from None


def check_reachable(address: str, timeout: float = 5.0) -> None:
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
            check_reachable(address)
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
        self.threads = threads  # the cells' thread count: each task asks Ray for that many CPUs
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
